/* Hospital administration: departments, doctors, weekly plan, quotas per channel, doctor stops with
   replacement sessions, the day's lists, the 16:00 phone list, fees and booking rules. Every change
   is one command: POST /api/v1/admin/schedule/<command>. */
(function () {
  "use strict";
  const App = window.App;
  const { t, el, $, $$, get, post, facts, todayISO, addDays, shortDay, weekday, periodText, titleText, hm, money, moment,
    requireRole, staffHello, showError, hideError, errorText, toast } = App;
  const st = { me: null, hospitalId: null, hospitals: [], departments: [], doctors: [], loaded: {} };
  const hospitalSelect = document.getElementById("admin-hospital");

  const command = (name, body) => post("/api/v1/admin/schedule/" + name, body);
  const enc = encodeURIComponent;
  function option(value, text, selected) { return el("option", { value: value, selected: selected || null }, text); }
  function formError(form) { return form.querySelector(".form-error"); }
  function emptyRow(cols, text) { return el("tr", null, el("td", { colspan: cols, class: "muted center" }, text || t("common.none"))); }
  function deptName(id) { const d = st.departments.find((x) => x.department_id === id); return d ? d.name : id || ""; }

  /* A load superseded by a newer one of the same view must not draw over it. */
  const loads = {};
  function ticket(name) {
    loads[name] = (loads[name] || 0) + 1;
    const mine = loads[name];
    return () => loads[name] === mine;
  }

  /* --- tabs --------------------------------------------------------------------------------- */
  const TABS = ["departments", "doctors", "plan", "quota", "stops", "lists", "phone", "rules"];
  const LOADERS = {};
  function showTab() {
    const name = TABS.indexOf(location.hash.slice(1)) >= 0 ? location.hash.slice(1) : "departments";
    TABS.forEach((tab) => {
      $("#panel-" + tab).hidden = tab !== name;
      $("#tab-" + tab).setAttribute("aria-selected", tab === name ? "true" : "false");
    });
    if (LOADERS[name]) LOADERS[name]().catch((err) => toast(errorText(err)));
  }
  window.addEventListener("hashchange", showTab);

  async function loadBasics() {
    const [ds, docs] = await Promise.all([
      get("/api/v1/hospitals/" + enc(st.hospitalId) + "/departments"),
      get("/api/v1/hospitals/" + enc(st.hospitalId) + "/doctors"),
    ]);
    st.departments = ds.departments || [];
    st.doctors = docs.doctors || [];
    const deptOptions = () => st.departments.map((d) => option(d.department_id, "\u3000".repeat(d.depth || 0) + d.name));
    // Default to a department where doctors work (a parent like 内科 has no sessions of its own).
    const staffed = st.departments.find((d) => st.doctors.some((doc) => doc.department_id === d.department_id));
    $$(".dept-select").forEach((s) => {
      const v = s.value || (staffed ? staffed.department_id : "");
      s.replaceChildren(...deptOptions());
      if (v) s.value = v;
    });
    $$(".dept-parent-select").forEach((s) => s.replaceChildren(option("", t("admin.dept.top")), ...deptOptions()));
    const docOptions = () => st.doctors.map((d) => option(d.doctor_id, d.name + " · " + titleText(d.title) + " · " + deptName(d.department_id)));
    $$(".doctor-select").forEach((s) => { const v = s.value; s.replaceChildren(...docOptions()); if (v) s.value = v; });
    $$(".doctor-select-optional").forEach((s) => s.replaceChildren(option("", "—"), ...docOptions()));
  }

  /* --- departments ---------------------------------------------------------------------------- */
  const deptForm = $("#dept-form");
  LOADERS.departments = async () => {
    const body = $("#dept-table tbody");
    body.replaceChildren(...(st.departments.length ? st.departments.map((d) => el("tr", { "data-department-id": d.department_id },
      el("td", null, "\u3000".repeat(Math.max(0, (d.depth || 0) - 1)), d.depth ? el("span", { class: "indent" }, "└") : null, d.name),
      el("td", { class: "muted small" }, d.department_id),
      el("td", null, el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => editDept(d) }, t("common.edit")))))
      : [emptyRow(3)]));
  };
  function editDept(d) {
    deptForm.dataset.editing = d.department_id;
    deptForm.department_id.value = d.department_id;
    deptForm.department_id.readOnly = true;
    deptForm.name.value = d.name;
    deptForm.parent_id.value = d.parent_id || "";
    $("#dept-form-title").textContent = t("common.edit") + " · " + d.name;
    deptForm.name.focus();
  }
  deptForm.addEventListener("reset", () => {
    delete deptForm.dataset.editing; deptForm.department_id.readOnly = false;
    $("#dept-form-title").textContent = t("admin.dept.new"); hideError(formError(deptForm));
  });
  deptForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(formError(deptForm));
    const body = { department_id: deptForm.department_id.value.trim(), name: deptForm.name.value.trim(), parent_id: deptForm.parent_id.value || null };
    try {
      if (deptForm.dataset.editing) await command("update_department", body);
      else await command("create_department", Object.assign({ hospital_id: st.hospitalId }, body));
      toast(t("common.saved"));
      deptForm.reset();
      await loadBasics();
      await LOADERS.departments();
    } catch (err) { showError(formError(deptForm), err); }
  });

  /* --- doctors -------------------------------------------------------------------------------- */
  const docForm = $("#doc-form");
  LOADERS.doctors = async () => {
    const body = $("#doc-table tbody");
    body.replaceChildren(...(st.doctors.length ? st.doctors.map((d) => el("tr", { "data-doctor-id": d.doctor_id },
      el("td", null, el("strong", null, d.name)), el("td", null, titleText(d.title)), el("td", null, deptName(d.department_id)),
      el("td", { class: "muted small" }, d.specialty || ""),
      el("td", null, el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => editDoctor(d) }, t("common.edit")))))
      : [emptyRow(5)]));
  };
  function editDoctor(d) {
    docForm.dataset.editing = d.doctor_id;
    ["doctor_id", "name", "title", "department_id", "specialty", "bio"].forEach((k) => { docForm[k].value = d[k] || ""; });
    docForm.clinic_type.value = d.clinic_type || "";
    docForm.doctor_id.readOnly = true;
    $("#doc-form-title").textContent = t("common.edit") + " · " + d.name;
    docForm.name.focus();
  }
  docForm.addEventListener("reset", () => {
    delete docForm.dataset.editing; docForm.doctor_id.readOnly = false;
    $("#doc-form-title").textContent = t("admin.doc.new"); hideError(formError(docForm));
  });
  docForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(formError(docForm));
    const body = {
      doctor_id: docForm.doctor_id.value.trim(), department_id: docForm.department_id.value, name: docForm.name.value.trim(),
      title: docForm.title.value, specialty: docForm.specialty.value.trim(), bio: docForm.bio.value.trim(),
      clinic_type: docForm.clinic_type.value || null,
    };
    try {
      if (docForm.dataset.editing) await command("update_doctor", body);
      else await command("register_doctor", Object.assign({ hospital_id: st.hospitalId }, body));
      toast(t("common.saved"));
      docForm.reset();
      await loadBasics();
      await LOADERS.doctors();
    } catch (err) { showError(formError(docForm), err); }
  });

  /* --- weekly plan ---------------------------------------------------------------------------- */
  const planBody = $("#plan-table tbody");
  function planRow(slot) {
    const s = slot || { weekday: 1, period: "morning", start: "08:00", end: "11:30", capacity: 30, quota: { web: 12, phone: 6, window: 6 } };
    const num = (name, value) => el("input", { type: "number", min: "0", name: name, value: value === undefined || value === null ? "" : value });
    return el("tr", null,
      el("td", null, el("select", { name: "weekday" }, [1, 2, 3, 4, 5, 6, 7].map((d) => option(d, t("weekday." + d), Number(s.weekday) === d)))),
      el("td", null, el("select", { name: "period" }, ["morning", "afternoon", "evening"].map((p) => option(p, periodText(p), s.period === p)))),
      el("td", null, el("input", { type: "time", name: "start", value: hm(s.start) })),
      el("td", null, el("input", { type: "time", name: "end", value: hm(s.end) })),
      el("td", null, num("capacity", s.capacity)),
      el("td", null, num("web", s.quota.web)), el("td", null, num("phone", s.quota.phone)), el("td", null, num("window", s.quota.window)),
      el("td", null, num("band_minutes", s.band_minutes)),
      el("td", null, el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: (e) => e.target.closest("tr").remove() }, "✕")));
  }
  function drawPlan() {
    const d = st.doctors.find((x) => x.doctor_id === $("#plan-doctor").value);
    const slots = (d && d.plan) || [];
    planBody.replaceChildren(...slots.map(planRow));
  }
  LOADERS.plan = async () => { drawPlan(); const f = $("#generate-form"); if (!f.date_from.value) { f.date_from.value = addDays(todayISO(), 1); f.date_to.value = addDays(todayISO(), 14); } };
  $("#plan-doctor").addEventListener("change", drawPlan);
  $("#plan-add").addEventListener("click", () => planBody.append(planRow()));
  $("#plan-save").addEventListener("click", async () => {
    const errorBox = $("#plan-error");
    hideError(errorBox);
    const slots = $$("tr", planBody).map((row) => {
      const v = (n) => row.querySelector("[name=" + n + "]").value;
      const slot = { weekday: Number(v("weekday")), period: v("period"), start: v("start"), end: v("end"), capacity: Number(v("capacity")),
        quota: { web: Number(v("web")), phone: Number(v("phone")), window: Number(v("window")) } };
      if (v("band_minutes")) slot.band_minutes = Number(v("band_minutes"));
      return slot;
    });
    try {
      await command("set_weekly_plan", { doctor_id: $("#plan-doctor").value, slots: slots });
      toast(t("common.saved"));
      await loadBasics();
    } catch (err) { showError(errorBox, err); }
  });
  $("#generate-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target;
    hideError(formError(f));
    try {
      const answer = await command("generate_sessions", { hospital_id: st.hospitalId, date_from: f.date_from.value, date_to: f.date_to.value });
      const n = answer && (answer.session_ids || answer.sessions || []).length;
      toast(t("admin.plan.generated", { n: n || 0 }));
    } catch (err) { showError(formError(f), err); }
  });

  /* --- quotas and stop requests --------------------------------------------------------------- */
  async function sessionsOf(departmentId, from, to) {
    if (!departmentId) return [];
    return (await get("/api/v1/departments/" + enc(departmentId) + "/schedule?from=" + from + "&to=" + to)).sessions || [];
  }
  LOADERS.quota = async () => {
    const from = $("#quota-from").value || todayISO();
    $("#quota-from").value = from;
    const current = ticket("quota");
    const sessions = await sessionsOf($("#quota-dept").value, from, addDays(from, 6));
    if (!current()) return;
    const body = $("#quota-table tbody");
    body.replaceChildren(...(sessions.length ? sessions.map((s) => {
      const q = s.quota || s.remaining || {};
      const input = (ch) => el("input", { type: "number", min: "0", name: ch, value: q[ch] ?? 0, "aria-label": t("admin.quota." + ch) });
      const r = s.remaining || {};
      return el("tr", { "data-session-id": s.session_id },
        el("td", null, shortDay(s.date) + " " + weekday(s.date) + " " + periodText(s.period)),
        el("td", null, s.doctor.name + " · " + titleText(s.doctor.title), " ", s.state === "stopped" ? el("span", { class: "badge badge-danger" }, t("state.stopped")) : null),
        el("td", null, (r.web ?? "-") + " / " + (r.phone ?? "-") + " / " + (r.window ?? "-")),
        el("td", null, el("div", { class: "quota-inputs" }, input("web"), input("phone"), input("window"))),
        el("td", null, el("div", { class: "row-actions" },
          el("button", { type: "button", class: "btn btn-primary btn-small", onclick: (e) => saveQuota(s, e.target.closest("tr")) }, t("common.save")),
          s.state !== "stopped" ? el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => requestStop(s) }, t("admin.stop.request")) : null)));
    }) : [emptyRow(5, t("dept.empty"))]));
  };
  $("#quota-dept").addEventListener("change", () => LOADERS.quota());
  $("#quota-from").addEventListener("change", () => LOADERS.quota());
  async function saveQuota(s, row) {
    const quota = {};
    ["web", "phone", "window"].forEach((ch) => { quota[ch] = Number(row.querySelector("[name=" + ch + "]").value); });
    try { await command("change_session_quota", { session_id: s.session_id, quota: quota }); toast(t("common.saved")); await LOADERS.quota(); }
    catch (err) { toast(errorText(err)); }
  }

  const stopDialog = $("#stop-dialog");
  const stopForm = $("#stop-form");
  let stopSession = null;
  function requestStop(s) {
    stopSession = s;
    hideError(formError(stopForm));
    stopForm.reset();
    stopForm.requested_by.value = st.me.name || st.me.subject;
    facts($("#stop-facts"), [[t("confirm.doctor"), s.doctor.name], [t("confirm.time"), shortDay(s.date) + " " + periodText(s.period) + " " + hm(s.start)]]);
    stopDialog.showModal();
  }
  stopForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await command("request_doctor_stop", { session_id: stopSession.session_id, reason: stopForm.reason.value.trim(), requested_by: stopForm.requested_by.value.trim() });
      stopDialog.close();
      toast(t("common.saved"));
      location.hash = "#stops";
    } catch (err) { showError(formError(stopForm), err); }
  });
  $$("[data-close]").forEach((b) => b.addEventListener("click", () => b.closest("dialog").close()));

  /* --- doctor stops --------------------------------------------------------------------------- */
  LOADERS.stops = async () => {
    const box = $("#stops");
    const current = ticket("stops");
    const answer = await get("/api/v1/hospitals/" + enc(st.hospitalId) + "/stops");
    if (!current()) return;
    const stops = answer.stops || [];
    const waiting = stops.filter((s) => s.state === "requested");
    const decided = stops.filter((s) => s.state !== "requested").slice(0, 20);
    const item = (s) => el("div", { class: "card stop", "data-stop-id": s.stop_id },
      el("div", null,
        el("div", null, el("strong", null, s.session_id), " ", el("span", { class: "badge " + (s.state === "requested" ? "badge-warn" : s.state === "approved" ? "badge-ok" : "") }, t("admin.stop.state." + s.state))),
        el("div", { class: "muted small" }, [s.reason, s.requested_by, moment(s.requested_at)].filter(Boolean).join(" · ")),
        s.replacement_session_id ? el("div", { class: "small" }, "→ " + s.replacement_session_id) : null,
        s.decision_reason ? el("div", { class: "small" }, s.decision_reason) : null),
      s.state === "requested" ? el("div", { class: "row-actions" },
        el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => reject(s) }, t("admin.stop.reject")),
        el("button", { type: "button", class: "btn btn-primary btn-small", onclick: () => approve(s) }, t("admin.stop.approve"))) : null);
    box.replaceChildren(...(waiting.length ? waiting.map(item) : [el("p", { class: "empty" }, t("admin.stop.none"))]), ...decided.map(item));
  };
  async function reject(s) {
    const reason = window.prompt(t("admin.stop.reason"));
    if (!reason) return;
    try { await command("reject_doctor_stop", { session_id: s.session_id, stop_id: s.stop_id, reason: reason }); toast(t("common.saved")); await LOADERS.stops(); }
    catch (err) { toast(errorText(err)); }
  }
  const approveDialog = $("#approve-dialog");
  const approveForm = $("#approve-form");
  let approving = null;
  function approve(s) {
    approving = s;
    hideError(formError(approveForm));
    approveForm.date.value = addDays(todayISO(), 7);
    facts($("#approve-facts"), [[t("admin.stop.session"), s.session_id], [t("admin.stop.reason"), s.reason]]);
    approveDialog.showModal();
  }
  approveForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { session_id: approving.session_id, stop_id: approving.stop_id };
    if (approveForm.mode.value === "replace") {
      body.replacement = { date: approveForm.date.value, period: approveForm.period.value, start: approveForm.start.value, end: approveForm.end.value };
      if (approveForm.doctor_id.value) body.replacement.doctor_id = approveForm.doctor_id.value;
    }
    try { await command("approve_doctor_stop", body); approveDialog.close(); toast(t("common.saved")); await LOADERS.stops(); }
    catch (err) { showError(formError(approveForm), err); }
  });

  /* --- the day's lists ------------------------------------------------------------------------ */
  function listTable(rows) {
    return el("div", { class: "table-scroll" }, el("table", { class: "table" },
      el("thead", null, el("tr", null, ["admin.lists.seq", "admin.lists.code", "admin.lists.id", "admin.lists.phone", "admin.lists.channel", "admin.lists.status"]
        .map((k) => el("th", null, t(k))))),
      el("tbody", null, rows.length ? rows.map((a) => el("tr", null, el("td", null, String(a.sequence_number)), el("td", { class: "code" }, a.code),
        el("td", null, a.id_masked || ""), el("td", null, a.phone_masked || ""), el("td", null, t("channel." + a.channel)),
        el("td", null, t("status." + a.status)))) : [emptyRow(6, t("admin.lists.empty"))])));
  }
  LOADERS.lists = async () => {
    const day = $("#lists-date").value || todayISO();
    $("#lists-date").value = day;
    const box = $("#day-lists");
    const current = ticket("lists");
    const sessions = await sessionsOf($("#lists-dept").value, day, day);
    if (!current()) return;
    if (!sessions.length) { box.replaceChildren(el("p", { class: "empty" }, t("dept.empty_day"))); return; }
    const blocks = await Promise.all(sessions.map(async (s) => {
      let content;
      try {
        const answer = await get("/api/v1/sessions/" + enc(s.session_id) + "/appointments");
        const rows = answer.appointments || [];
        content = [el("span", { class: "badge badge-brand" }, t("admin.lists.patients", { n: rows.filter((a) => a.status !== "cancelled").length })), listTable(rows)];
      } catch (err) { content = [el("p", { class: "form-error" }, errorText(err))]; }
      return el("section", { class: "list-block", "data-session-id": s.session_id },
        el("h3", null, s.doctor.name + " · " + titleText(s.doctor.title) + " · " + periodText(s.period) + " " + hm(s.start) + "–" + hm(s.end), content[0]),
        content.slice(1));
    }));
    if (current()) box.replaceChildren(...blocks);
  };
  $("#lists-dept").addEventListener("change", () => LOADERS.lists());
  $("#lists-date").addEventListener("change", () => LOADERS.lists());

  /* --- 16:00 phone list ----------------------------------------------------------------------- */
  LOADERS.phone = async () => {
    const day = $("#phone-date").value || addDays(todayISO(), 1);
    $("#phone-date").value = day;
    const current = ticket("phone");
    const answer = await get("/api/v1/hospitals/" + enc(st.hospitalId) + "/phone-list?date=" + day);
    if (!current()) return;
    const rows = answer.appointments || [];
    $("#phone-count").textContent = t("admin.phone.count", { n: rows.length });
    $("#phone-table tbody").replaceChildren(...(rows.length ? rows.map((a) => el("tr", null,
      el("td", null, String(a.sequence_number)), el("td", { class: "code" }, a.code), el("td", null, a.session_id),
      el("td", null, a.id_masked || ""), el("td", null, a.phone_masked || ""), el("td", null, a.fee ? money(a.fee) : ""),
      el("td", null, t("status." + (a.status || "booked"))))) : [emptyRow(7, t("admin.lists.empty"))]));
  };
  $("#phone-date").addEventListener("change", () => LOADERS.phone());
  $$("[data-print]").forEach((b) => b.addEventListener("click", () => window.print()));

  /* --- fees and rules ------------------------------------------------------------------------- */
  LOADERS.rules = async () => {
    const h = st.hospitals.find((x) => x.hospital_id === st.hospitalId) || {};
    const rules = h.rules || {};
    const form = $("#rules-form");
    Object.keys(rules).forEach((k) => { if (form.elements[k]) form.elements[k].value = form.elements[k].type === "time" ? hm(rules[k]) : rules[k]; });
    const fees = h.fees || {};
    $("#fee-list").replaceChildren(...Object.entries(fees).map(([k, v]) => el("span", { class: "badge" }, titleText(k) + " " + money(v))));
  };
  $("#fee-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target;
    hideError(formError(f));
    try { await command("change_fee", { hospital_id: st.hospitalId, fee_class: f.fee_class.value, fee: f.fee.value }); toast(t("common.saved")); }
    catch (err) { showError(formError(f), err); }
  });
  $("#rules-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target;
    hideError(formError(f));
    const rules = {};
    $$("input", f).forEach((i) => { rules[i.name] = i.type === "number" ? Number(i.value) : i.value; });
    try { await command("change_booking_rules", { hospital_id: st.hospitalId, rules: rules }); toast(t("common.saved")); await loadHospitals(); }
    catch (err) { showError(formError(f), err); }
  });
  $("#holiday-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target;
    hideError(formError(f));
    try { await command("declare_holiday", { hospital_id: st.hospitalId, date: f.date.value, name: f.name.value.trim() }); toast(t("common.saved")); f.reset(); }
    catch (err) { showError(formError(f), err); }
  });

  /* --- start ---------------------------------------------------------------------------------- */
  async function loadHospitals() {
    st.hospitals = (await get("/api/v1/hospitals")).hospitals || [];
  }
  async function chooseHospital(id) {
    st.hospitalId = id;
    st.loaded = {};
    await loadBasics();
    showTab();
  }
  requireRole(["hospital_admin", "platform_admin"]).then(async (me) => {
    st.me = me;
    staffHello(me);
    await loadHospitals();
    const mine = me.role === "hospital_admin" ? st.hospitals.filter((h) => h.hospital_id === me.hospital_id) : st.hospitals;
    hospitalSelect.replaceChildren(...mine.map((h) => option(h.hospital_id, h.name)));
    hospitalSelect.disabled = mine.length < 2;
    hospitalSelect.addEventListener("change", () => chooseHospital(hospitalSelect.value));
    if (mine.length) await chooseHospital(mine[0].hospital_id);
  }).catch((err) => toast(errorText(err)));
})();
