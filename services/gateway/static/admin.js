/* Hospital administration: departments, doctors, weekly plan, quotas per channel, doctor stops with
   replacement sessions, the day's lists, the 16:00 phone list and what the HIS answered for it, fees and
   booking rules, holidays, SMS (reminder and quiet hours, doctors' notices, delivery), the HIS interface
   (messages and, for the platform, the connection), staff accounts and the hospitals themselves.
   Every schedule change is one command: POST /api/v1/admin/schedule/<command>. Staff never type an ASCII code: new departments and doctors
   get one derived from the hospital's, and every list shows names. */
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
  const TABS = ["departments", "doctors", "plan", "quota", "stops", "lists", "phone", "rules", "holidays", "sms", "his", "accounts", "hospitals"];
  const LOADERS = {};
  const tabSelect = $("#tab-select");
  function showTab() {
    const name = TABS.indexOf(location.hash.slice(1)) >= 0 ? location.hash.slice(1) : "departments";
    TABS.forEach((tab) => {
      $("#panel-" + tab).hidden = tab !== name;
      $("#tab-" + tab).setAttribute("aria-selected", tab === name ? "true" : "false");
    });
    tabSelect.value = name;
    const strip = $("#tab-" + name);
    if (strip.scrollIntoView && strip.offsetParent) strip.scrollIntoView({ block: "nearest", inline: "nearest" });
    // Until a hospital is chosen there is nothing to load: chooseHospital shows the tab again.
    if (LOADERS[name] && st.hospitalId) LOADERS[name]().catch((err) => toast(errorText(err)));
  }
  window.addEventListener("hashchange", showTab);
  tabSelect.addEventListener("change", () => { location.hash = "#" + tabSelect.value; });

  /* Codes for what a hospital adds, so that nobody has to invent ASCII ids (ids stay ^[a-z0-9-]{2,60}$):
     departments <hospital>-d<n>, doctors <hospital>-<6 random letters and digits>. */
  function nextDepartmentId() {
    const taken = new Set(st.departments.map((d) => d.department_id));
    let n = st.departments.length + 1;
    while (taken.has(st.hospitalId + "-d" + n)) n += 1;
    return st.hospitalId + "-d" + n;
  }
  function newDoctorId() {
    const alphabet = "abcdefghijkmnpqrstuvwxyz23456789";
    const bytes = crypto.getRandomValues(new Uint8Array(6));
    return st.hospitalId + "-" + Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
  }
  const isConflict = (err) => err instanceof App.ApiError && err.status === 409;
  /* A derived code another admin took a moment ago is answered 409: take the next one (a few times). */
  async function createWithCode(name, body, field, makeId, taken) {
    for (let attempt = 0; ; attempt++) {
      const id = makeId();
      try { return await command(name, Object.assign({ [field]: id }, body)); }
      catch (err) { if (!isConflict(err) || (err.field && err.field !== field) || attempt >= 4) throw err; taken(id); }
    }
  }
  function doctorName(id) { const d = st.doctors.find((x) => x.doctor_id === id); return d ? d.name : ""; }

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
      el("td", null, "\u3000".repeat(Math.max(0, (d.depth || 0) - 1)), d.depth ? el("span", { class: "indent" }, "└") : null, el("strong", null, d.name)),
      el("td", { class: "muted small" }, d.parent_id ? deptName(d.parent_id) : t("admin.dept.top")),
      el("td", null, String(st.doctors.filter((doc) => doc.department_id === d.department_id).length)),
      el("td", null, el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => editDept(d) }, t("common.edit")))))
      : [emptyRow(4)]));
  };
  function editDept(d) {
    deptForm.dataset.editing = d.department_id;
    deptForm.name.value = d.name;
    deptForm.parent_id.value = d.parent_id || "";
    $("#dept-form-title").textContent = t("common.edit") + " · " + d.name;
    deptForm.name.focus();
  }
  deptForm.addEventListener("reset", () => {
    delete deptForm.dataset.editing;
    $("#dept-form-title").textContent = t("admin.dept.new"); hideError(formError(deptForm));
  });
  deptForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(formError(deptForm));
    const body = { name: deptForm.name.value.trim(), parent_id: deptForm.parent_id.value || null };
    try {
      if (deptForm.dataset.editing) await command("update_department", Object.assign({ department_id: deptForm.dataset.editing }, body));
      else await createWithCode("create_department", Object.assign({ hospital_id: st.hospitalId }, body), "department_id", nextDepartmentId,
        (id) => st.departments.push({ department_id: id }));
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
    ["name", "title", "department_id", "specialty", "bio"].forEach((k) => { docForm[k].value = d[k] || ""; });
    docForm.clinic_type.value = d.clinic_type || "";
    $("#doc-form-title").textContent = t("common.edit") + " · " + d.name;
    docForm.name.focus();
  }
  docForm.addEventListener("reset", () => {
    delete docForm.dataset.editing;
    $("#doc-form-title").textContent = t("admin.doc.new"); hideError(formError(docForm));
  });
  docForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(formError(docForm));
    const body = {
      department_id: docForm.department_id.value, name: docForm.name.value.trim(),
      title: docForm.title.value, specialty: docForm.specialty.value.trim(), bio: docForm.bio.value.trim(),
      clinic_type: docForm.clinic_type.value || null,
    };
    try {
      if (docForm.dataset.editing) await command("update_doctor", Object.assign({ doctor_id: docForm.dataset.editing }, body));
      else await createWithCode("register_doctor", Object.assign({ hospital_id: st.hospitalId }, body), "doctor_id", newDoctorId, () => {});
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
  /* The sessions of every staffed department between two days (at most 31), by id: how a list that
     holds only session ids (stops, the phone list) shows the doctor, the day and the fee instead. */
  async function sessionIndex(from, to) {
    const staffed = st.departments.filter((d) => st.doctors.some((doc) => doc.department_id === d.department_id));
    const lists = await Promise.all(staffed.map((d) => sessionsOf(d.department_id, from, to).catch(() => [])));
    const index = {};
    lists.flat().forEach((s) => { index[s.session_id] = s; });
    return index;
  }
  function sessionText(s, fallback) {
    if (!s) return fallback || "";
    const doctor = (s.doctor && s.doctor.name) || s.doctor_name || doctorName(s.doctor_id);
    return [doctor, shortDay(s.date) + " " + weekday(s.date) + " " + periodText(s.period) + (s.start ? " " + hm(s.start) : "")].filter(Boolean).join(" · ");
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
    const index = stops.length ? await sessionIndex(addDays(todayISO(), -7), addDays(todayISO(), 23)) : {};
    if (!current()) return;
    st.sessionIndex = index;
    const item = (s) => {
      const stopped = index[s.session_id] || s.session || null;
      const replacement = s.replacement_session_id ? index[s.replacement_session_id] || s.replacement || null : null;
      const fee = stopped && stopped.fee !== undefined ? stopped.fee : s.fee;
      return el("div", { class: "card stop", "data-stop-id": s.stop_id, "data-session-id": s.session_id },
      el("div", null,
        el("div", null, el("strong", { class: "stop-session" }, sessionText(stopped, t("admin.stop.unknown_session"))), " ",
          el("span", { class: "badge " + (s.state === "requested" ? "badge-warn" : s.state === "approved" ? "badge-ok" : "") }, t("admin.stop.state." + s.state))),
        el("div", { class: "muted small" }, [s.reason, s.requested_by, moment(s.requested_at)].filter(Boolean).join(" · ")),
        s.replacement_session_id ? el("div", { class: "small replacement-line" }, "→ " + t("admin.stop.moved_to") + " " + sessionText(replacement, t("admin.stop.replacement_session")),
          fee !== undefined && fee !== null ? el("span", { class: "kept-fee" }, " · " + t("admin.stop.fee_kept", { fee: money(fee) })) : null) : null,
        s.decision_reason ? el("div", { class: "small" }, s.decision_reason) : null),
      s.state === "requested" ? el("div", { class: "row-actions" },
        el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => reject(s) }, t("admin.stop.reject")),
        el("button", { type: "button", class: "btn btn-primary btn-small", onclick: () => approve(s) }, t("admin.stop.approve"))) : null);
    };
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
    const stopped = (st.sessionIndex || {})[s.session_id];
    facts($("#approve-facts"), [[t("admin.stop.session"), sessionText(stopped, t("admin.stop.unknown_session"))], [t("admin.stop.reason"), s.reason],
      [t("confirm.fee"), stopped && stopped.fee !== undefined ? t("admin.stop.fee_kept", { fee: money(stopped.fee) }) : null]]);
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
    return el("div", { class: "table-scroll" }, el("table", { class: "table table-reflow" },
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
    // What the HIS answered is read alongside: the list is drawn even when his_sync cannot answer.
    const handover = fetchHandover(day);
    const answer = await get("/api/v1/hospitals/" + enc(st.hospitalId) + "/phone-list?date=" + day);
    if (!current()) return;
    const rows = answer.appointments || [];
    st.phoneRows = {};
    st.phoneOrder = {};
    rows.forEach((a, i) => { if (a.appointment_id) { st.phoneRows[a.appointment_id] = a; st.phoneOrder[a.appointment_id] = i; } });
    const index = rows.some((a) => !a.doctor_name) ? await sessionIndex(day, day) : {};
    if (!current()) return;
    $("#phone-count").textContent = t("admin.phone.count", { n: rows.length });
    $("#phone-table tbody").replaceChildren(...(rows.length ? rows.map((a) => el("tr", null,
      el("td", null, String(a.sequence_number)), el("td", { class: "code" }, a.code),
      el("td", null, a.doctor_name || (index[a.session_id] && index[a.session_id].doctor.name) || ""),
      el("td", null, a.period ? periodText(a.period) + (a.start ? " " + hm(a.start) : "") : index[a.session_id] ? periodText(index[a.session_id].period) + " " + hm(index[a.session_id].start) : ""),
      el("td", null, a.id_masked || ""), el("td", null, a.phone_masked || ""), el("td", null, a.fee ? money(a.fee) : ""),
      el("td", null, t("status." + (a.status || "booked"))))) : [emptyRow(8, t("admin.lists.empty"))]));
    drawHandover(await handover);
  };
  $("#phone-date").addEventListener("change", () => LOADERS.phone());

  /* --- what the HIS answered for the day's hand-over: one ADT^A05 per paid phone booking ------- */
  function fetchHandover(day) {
    return get("/api/v1/hospitals/" + enc(st.hospitalId) + "/handover?date=" + day).catch((err) => ({ error: err }));
  }
  async function loadHandover() {
    const current = ticket("handover");
    const hospital = st.hospitalId;
    const answer = await fetchHandover($("#phone-date").value);
    if (current() && hospital === st.hospitalId) drawHandover(answer);
  }
  function drawHandover(answer) {
    const summary = $("#handover-summary");
    const box = $("#handover-error");
    hideError(box);
    if (answer.error) {
      summary.hidden = true;
      showError(box, answer.error);
      $("#handover-table tbody").replaceChildren();
      return;
    }
    // In the phone list's order (session, then number) where it has the booking; the rest newest first.
    const order = (m) => ((st.phoneOrder || {})[m.appointment_id] ?? Infinity);
    const rows = (answer.messages || []).slice().sort((a, b) => (order(a) === order(b) ? 0 : order(a) < order(b) ? -1 : 1));
    const n = answer.summary || {};
    summary.hidden = !rows.length;
    summary.textContent = t("admin.handover.summary", { acked: n.acked || 0, failed: n.failed || 0, waiting: (n.queued || 0) + (n.sending || 0) })
      + (n.skipped ? " / " + t("admin.handover.skipped", { n: n.skipped }) : "");
    $("#handover-table tbody").replaceChildren(...(rows.length ? rows.map((m) => {
      const a = (st.phoneRows || {})[m.appointment_id];
      return el("tr", { "data-message-id": m.message_id, "data-appointment-id": m.appointment_id, "data-status": m.status },
        el("td", { class: "cell-wrap" }, el("div", null,
          a ? el("div", null, el("strong", null, t("admin.handover.seq", { seq: a.sequence_number, code: a.code }))) : null,
          el("div", { class: "small muted his-id" }, m.appointment_id))),
        el("td", null, hisStateBadge(m.status)),
        el("td", { class: "cell-wrap" }, hisAnswer(m)),
        el("td", null, moment(m.acked_at) || "—"),
        el("td", null, hisActions(m, loadHandover)));
    }) : [emptyRow(5, t(answer.handed_over ? "admin.handover.none" : "admin.handover.empty"))]));
  }
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

  /* --- holidays: preview what the day stops, then declare with that number ------------------- */
  const holidayDialog = $("#holiday-dialog");
  const holidayForm = $("#holiday-form");
  let holidayAsked = null;
  function currentHospital() { return st.hospitals.find((x) => x.hospital_id === st.hospitalId) || {}; }
  LOADERS.holidays = async () => {
    const list = $("#holiday-list");
    const days = (currentHospital().holidays || []).slice().sort((a, b) => (a.date < b.date ? -1 : 1));
    list.replaceChildren(...(days.length ? days.map((h) => el("li", { "data-date": h.date },
      el("span", null, el("strong", null, h.name), " · " + h.date + " " + weekday(h.date)),
      el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => cancelHoliday(h) }, t("admin.holiday.cancel"))))
      : [el("li", { class: "muted" }, t("admin.holiday.none"))]));
    if (!holidayForm.date.value) holidayForm.date.value = addDays(todayISO(), 1);
  };
  holidayForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(formError(holidayForm));
    const day = holidayForm.date.value, name = holidayForm.name.value.trim();
    if (!day || !name) { showError(formError(holidayForm), t("admin.holiday.fill")); return; }
    try {
      const preview = await get("/api/v1/hospitals/" + enc(st.hospitalId) + "/holiday-preview?date=" + day);
      const sessions = preview.sessions || [];
      const bookings = preview.bookings !== undefined ? preview.bookings : sessions.reduce((n, x) => n + (x.booked || 0), 0);
      holidayAsked = { date: day, name: name, confirm_stops: sessions.length };
      $("#holiday-impact").textContent = sessions.length
        ? t("admin.holiday.impact", { n: sessions.length, m: bookings }) : t("admin.holiday.no_sessions");
      $("#holiday-sessions").hidden = !sessions.length;
      $("#holiday-sessions tbody").replaceChildren(...sessions.map((x) => el("tr", { "data-session-id": x.session_id },
        el("td", null, x.doctor_name || doctorName(x.doctor_id)), el("td", null, deptName(x.department_id)),
        el("td", null, periodText(x.period) + " " + hm(x.start) + (x.end ? "–" + hm(x.end) : "")), el("td", null, String(x.booked || 0)))));
      $("#holiday-title").textContent = t("admin.holiday.confirm_title") + " · " + name + " " + shortDay(day);
      hideError(formError($("#holiday-confirm-form")));
      holidayDialog.showModal();
    } catch (err) { showError(formError(holidayForm), err); }
  });
  $("#holiday-confirm-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = formError(event.target);
    try {
      await command("declare_holiday", Object.assign({ hospital_id: st.hospitalId }, holidayAsked));
      holidayDialog.close();
      toast(t("admin.holiday.declared"));
      holidayForm.reset();
      await loadHospitals();
      await LOADERS.holidays();
    } catch (err) { showError(box, err); }
  });
  async function cancelHoliday(h) {
    if (!window.confirm(t("admin.holiday.cancel_ask", { name: h.name, date: h.date }))) return;
    try {
      await command("cancel_holiday", { hospital_id: st.hospitalId, date: h.date });
      toast(t("admin.holiday.cancelled"));
      await loadHospitals();
      await LOADERS.holidays();
    } catch (err) { toast(errorText(err)); }
  }

  /* --- SMS: the hospital's reminder and quiet hours, each doctor's notices, what was sent ------- */
  const smsForm = $("#sms-settings-form");
  const runForm = $("#reminder-run-form");
  const contactDialog = $("#sms-doctor-dialog");
  const contactForm = $("#sms-doctor-form");
  const SMS_STATES = ["queued", "sending", "sent", "delivered", "failed", "withdrawn"];
  const SMS_BADGE = { queued: "badge-warn", sending: "badge-warn", sent: "badge-brand", delivered: "badge-ok", failed: "badge-danger", withdrawn: "" };
  const TEMPLATES = ["booking_confirmation", "reminder", "cancelled", "cancelled_doctor_stop", "moved_by_doctor_stop", "refunded",
    "patient_banned", "ban_lifted", "doctor_booking", "doctor_digest", "verification_code", "registration_refused", "password_replaced"];
  const put = (path, body) => App.api("PUT", path, body);
  const contacts = {};  // doctor_id -> the answer of GET /api/v1/doctors/<id>/contact (masked)
  let editingDoctor = null;

  /* A refusal names its field (the API's error.field, or the form's own check): mark that input. */
  function refuse(form, field, err) {
    $$("[aria-invalid]", form).forEach((n) => n.removeAttribute("aria-invalid"));
    const input = field && form.elements[field];
    if (input && input.setAttribute) { input.setAttribute("aria-invalid", "true"); input.focus(); }
    showError(formError(form), err);
  }
  const showFieldError = (form, err) => refuse(form, err && err.field, err);
  function clearFieldErrors(form) {
    $$("[aria-invalid]", form).forEach((n) => n.removeAttribute("aria-invalid"));
    hideError(formError(form));
  }
  function smsState(status) { return SMS_STATES.indexOf(status) >= 0 ? t("admin.sms.state." + status) : status; }
  function templateText(name) { return TEMPLATES.indexOf(name) >= 0 ? t("admin.sms.tpl." + name) : name; }
  function noticeText(c) {
    if (!c) return t("admin.sms.unreadable");
    return c.notice === "digest" ? t("admin.sms.notice.digest_at", { time: hm(c.digest_time) }) : t("admin.sms.notice." + (c.notice || "none"));
  }

  LOADERS.sms = async () => {
    const current = ticket("sms");
    if (!runForm.visit_date.value) runForm.visit_date.value = addDays(todayISO(), 1);
    const [settings] = await Promise.all([
      get("/api/v1/hospitals/" + enc(st.hospitalId) + "/sms-settings"),
      loadContacts(current),
      loadMessages(),
    ]);
    if (!current()) return;
    fillSmsSettings(settings);
  };

  function fillSmsSettings(s) {
    ["reminder_time", "quiet_start", "quiet_end"].forEach((k) => { smsForm.elements[k].value = hm(s[k]); });
    smsForm.window_location.value = s.window_location || "";
    $("#sms-address").hidden = !s.address;
    $("#sms-address").textContent = s.address ? t("admin.sms.address_note", { address: s.address }) : "";
  }
  smsForm.addEventListener("input", () => { $("#sms-settings-saved").hidden = true; });
  smsForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(smsForm);
    $("#sms-settings-saved").hidden = true;
    const body = {};
    for (const k of ["reminder_time", "quiet_start", "quiet_end"]) {
      body[k] = hm(smsForm.elements[k].value);
      if (!/^\d{2}:\d{2}$/.test(body[k])) { refuse(smsForm, k, t("admin.sms.bad_time")); return; }
    }
    body.window_location = smsForm.window_location.value.trim();
    try {
      const saved = await put("/api/v1/hospitals/" + enc(st.hospitalId) + "/sms-settings", body);
      fillSmsSettings(saved);
      const done = $("#sms-settings-saved");
      done.textContent = t("admin.sms.saved", { time: hm(saved.reminder_time) });
      done.hidden = false;
      toast(t("common.saved"));
    } catch (err) { showFieldError(smsForm, err); }
  });

  /* --- each doctor's mobile (masked) and notice ---------------------------------------------- */
  async function loadContacts(current) {
    // One request for the hospital's doctors, however many there are.
    let answer = { contacts: [] };
    try { answer = await get("/api/v1/hospitals/" + enc(st.hospitalId) + "/doctor-contacts"); } catch (err) { /* shown empty */ }
    if (!current()) return;
    Object.keys(contacts).forEach((k) => { delete contacts[k]; });
    (answer.contacts || []).forEach((c) => { contacts[c.doctor_id] = c; });
    drawContacts();
  }
  function drawContacts() {
    $("#sms-doctor-table tbody").replaceChildren(...(st.doctors.length ? st.doctors.map((d) => {
      const c = contacts[d.doctor_id];
      return el("tr", { "data-doctor-id": d.doctor_id },
        el("td", null, el("span", null, el("strong", null, d.name), " ", el("span", { class: "muted small" }, titleText(d.title)))),
        el("td", null, deptName(d.department_id)),
        el("td", { class: "doctor-phone" }, c && c.phone_masked ? c.phone_masked : el("span", { class: "muted" }, c ? t("admin.sms.no_phone") : "—")),
        el("td", { class: "doctor-notice", "data-notice": c ? c.notice : null }, noticeText(c)),
        el("td", null, c ? el("button", { type: "button", class: "btn btn-ghost btn-small sms-doctor-edit", onclick: () => editContact(d) }, t("admin.sms.edit")) : null));
    }) : [emptyRow(5)]));
  }
  function showDigestField() { $("#sms-digest-field").hidden = contactForm.notice.value !== "digest"; }
  function editContact(d) {
    const c = contacts[d.doctor_id] || {};
    editingDoctor = d;
    contactForm.reset();
    clearFieldErrors(contactForm);
    contactForm.notice.value = c.notice || "none";
    contactForm.digest_time.value = hm(c.digest_time) || "07:00";
    showDigestField();
    $("#sms-doctor-title").textContent = t("admin.sms.edit_title") + " · " + d.name;
    facts($("#sms-doctor-facts"), [[t("admin.doc.department"), deptName(d.department_id)],
      [t("admin.sms.current_phone"), c.phone_masked || t("admin.sms.no_phone")]]);
    contactDialog.showModal();
    contactForm.phone.focus();
  }
  contactForm.notice.addEventListener("change", showDigestField);
  contactForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(contactForm);
    const d = editingDoctor;
    const body = { phone: contactForm.phone.value.replace(/\s+/g, ""), notice: contactForm.notice.value,
      digest_time: hm(contactForm.digest_time.value) || "07:00" };
    if (body.phone && !/^1[3-9]\d{9}$/.test(body.phone)) { refuse(contactForm, "phone", t("register.bad_phone")); return; }
    if (body.notice !== "none" && !body.phone) { refuse(contactForm, "phone", t("admin.sms.phone_needed")); return; }
    try {
      const saved = await put("/api/v1/doctors/" + enc(d.doctor_id) + "/contact", body);
      contacts[d.doctor_id] = saved;
      contactForm.reset();  // the typed number leaves the page with the dialog
      contactDialog.close();
      drawContacts();
      toast(t("admin.sms.contact_saved", { name: d.name }));
    } catch (err) { showFieldError(contactForm, err); }
  });
  contactDialog.addEventListener("close", () => contactForm.reset());

  /* --- delivery: the newest 100 messages, without their text ---------------------------------- */
  async function loadMessages() {
    const current = ticket("sms-messages");
    const status = $("#sms-status").value;
    const answer = await get("/api/v1/sms/messages?hospital_id=" + enc(st.hospitalId) + (status ? "&status=" + enc(status) : "") + "&limit=100");
    if (!current()) return;
    const rows = answer.messages || [];
    $("#sms-count").textContent = t("admin.sms.count", { n: rows.length });
    $("#sms-table tbody").replaceChildren(...(rows.length ? rows.map(messageRow) : [emptyRow(7, t("admin.sms.empty"))]));
  }
  function messageDetail(m) {
    const now = Date.now();
    const later = (iso) => iso && new Date(iso).getTime() > now + 1000;
    switch (m.status) {
      case "queued":
        if (m.attempts > 0 && later(m.next_attempt_at)) return t("admin.sms.next_try", { n: m.attempts, time: moment(m.next_attempt_at) });
        return later(m.not_before) ? t("admin.sms.held_until", { time: moment(m.not_before) }) : "";
      case "sent": return t("admin.sms.sent_at", { time: moment(m.sent_at) });
      case "delivered": return t("admin.sms.delivered_at", { time: moment(m.delivered_at) });
      case "failed": return t("admin.sms.failed_at", { time: moment(m.failed_at), n: m.attempts });
      default: return "";
    }
  }
  function messageRow(m) {
    const detail = messageDetail(m);
    return el("tr", { "data-message-id": m.message_id, "data-status": m.status, "data-template": m.template },
      el("td", null, moment(m.created_at)),
      el("td", null, templateText(m.template), m.urgent ? [" ", el("span", { class: "badge badge-warn" }, t("admin.sms.urgent"))] : null),
      el("td", null, t("admin.sms.recipient." + (m.recipient === "doctor" ? "doctor" : "patient"))),
      el("td", null, m.phone_masked || ""),
      el("td", null, el("span", { class: "badge sms-state " + (SMS_BADGE[m.status] || "") }, smsState(m.status))),
      el("td", { class: "cell-wrap" }, el("div", null, el("div", { class: "small" }, detail || "—"),
        m.last_error && (m.status === "failed" || m.status === "queued") ? el("div", { class: "small sms-error" }, m.last_error) : null)),
      el("td", null, m.status === "failed" ? el("button", { type: "button", class: "btn btn-ghost btn-small sms-retry", onclick: (e) => retryMessage(m, e.target) }, t("admin.sms.retry")) : null));
  }
  async function retryMessage(m, button) {
    button.disabled = true;
    try {
      await post("/api/v1/sms/messages/" + enc(m.message_id) + "/retry");
      toast(t("admin.sms.retried"));
      await loadMessages();
    } catch (err) { button.disabled = false; toast(errorText(err)); }
  }
  $("#sms-status").addEventListener("change", () => loadMessages().catch((err) => toast(errorText(err))));
  $("#sms-refresh").addEventListener("click", () => loadMessages().catch((err) => toast(errorText(err))));

  /* The operator's run: a visit day's reminders now. A booking already reminded gets none again. */
  runForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(runForm);
    const result = $("#reminder-run-result");
    result.hidden = true;
    const day = runForm.visit_date.value;
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) { refuse(runForm, "visit_date", t("admin.sms.pick_date")); return; }
    const button = $("#reminder-run");
    button.disabled = true;
    try {
      const answer = await post("/api/v1/sms/reminders", { visit_date: day, hospital_id: st.hospitalId });
      result.textContent = answer.queued ? t("admin.sms.queued", { n: answer.queued }) : t("admin.sms.queued_none");
      result.dataset.queued = String(answer.queued || 0);
      result.hidden = false;
      await loadMessages();
    } catch (err) { showFieldError(runForm, err); }
    finally { button.disabled = false; }
  });

  /* --- HIS interface: the messages to the hospital's HIS; its connection for the platform -------- */
  const hisForm = $("#his-endpoint-form");
  const HIS_STATES = ["queued", "sending", "acked", "failed", "skipped"];
  const HIS_BADGE = { queued: "badge-warn", sending: "badge-warn", acked: "badge-ok", failed: "badge-danger", skipped: "" };
  const HIS_TYPES = ["SIU^S12", "SIU^S14", "SIU^S15", "SIU^S26", "ADT^A04", "ADT^A11", "ADT^A05"];
  const HIS_TEXT_FIELDS = ["host", "receiving_application", "receiving_facility", "sending_facility", "inbound_facility"];
  let hisEndpoint = null;  // the selected hospital's row of GET /api/v1/his/endpoints, or null when it has none

  function hisStateBadge(status) {
    return el("span", { class: "badge " + (HIS_BADGE[status] || ""), "data-state": status },
      HIS_STATES.indexOf(status) >= 0 ? t("admin.his.state." + status) : status);
  }
  function hisTypeText(type) { return HIS_TYPES.indexOf(type) >= 0 ? t("admin.his.type." + type) : type; }
  /* The HIS's own answer (MSA-1 and its text) when there is one; else why it is still waiting or parked. */
  function hisAnswer(m) {
    const lines = [];
    if (m.ack_code) lines.push(el("div", { class: "small" }, el("strong", { class: "code-ish" }, m.ack_code), m.ack_text ? " " + m.ack_text : ""));
    if (m.status === "queued" && m.attempts > 0 && m.next_attempt_at && new Date(m.next_attempt_at).getTime() > Date.now())
      lines.push(el("div", { class: "small" }, t("admin.his.next_try", { n: m.attempts, time: moment(m.next_attempt_at) })));
    if (m.last_error && (m.status === "failed" || m.status === "queued") && !(m.ack_text && m.last_error.indexOf(m.ack_text) >= 0))
      lines.push(el("div", { class: "small sms-error" }, m.last_error));
    if (m.status === "failed" && m.attempts) lines.push(el("div", { class: "small muted" }, t("admin.his.attempts", { n: m.attempts })));
    return lines.length ? el("div", null, lines) : "—";
  }
  function hisActions(m, reload) {
    if (m.status !== "failed") return null;
    return el("div", { class: "row-actions" },
      el("button", { type: "button", class: "btn btn-ghost btn-small his-retry", onclick: (e) => requeueHis(m, "retry", e.target, reload) }, t("admin.his.retry")),
      el("button", { type: "button", class: "btn btn-ghost btn-small his-skip", onclick: (e) => requeueHis(m, "skip", e.target, reload) }, t("admin.his.skip")));
  }
  async function requeueHis(m, action, button, reload) {
    if (action === "skip" && !window.confirm(t("admin.his.skip_ask"))) return;
    button.disabled = true;
    try {
      await post("/api/v1/his/messages/" + enc(m.message_id) + "/" + action);
      toast(t(action === "skip" ? "admin.his.skipped" : "admin.his.retried"));
      await reload();
    } catch (err) { button.disabled = false; toast(errorText(err)); }
  }

  /* The form is filled when the tab opens or the hospital changes; 刷新 keeps what is being typed. */
  function loadHis(refill) {
    return Promise.all([loadHisMessages(), st.me.role === "platform_admin" ? loadEndpoint(refill) : null]);
  }
  LOADERS.his = () => loadHis(true);
  async function loadHisMessages() {
    const current = ticket("his-messages");
    const hospital = st.hospitalId;
    const status = $("#his-status").value;
    const answer = await get("/api/v1/his/messages?hospital_id=" + enc(hospital) + (status ? "&status=" + enc(status) : "") + "&limit=100");
    if (!current() || hospital !== st.hospitalId) return;
    const rows = answer.messages || [];
    $("#his-count").textContent = t("admin.his.count", { n: rows.length });
    $("#his-table tbody").replaceChildren(...(rows.length ? rows.map((m) => el("tr",
      { "data-message-id": m.message_id, "data-status": m.status, "data-type": m.message_type, "data-appointment-id": m.appointment_id },
      el("td", null, moment(m.created_at)),
      el("td", null, el("div", null, el("div", null, hisTypeText(m.message_type)), el("div", { class: "small muted code-ish" }, m.message_type))),
      el("td", { class: "cell-wrap" }, el("span", { class: "small his-id" }, m.appointment_id || "—")),
      el("td", null, hisStateBadge(m.status)),
      el("td", { class: "cell-wrap" }, hisAnswer(m)),
      el("td", null, moment(m.acked_at) || "—"),
      el("td", null, hisActions(m, loadHisMessages)))) : [emptyRow(7, t("admin.his.empty"))]));
  }
  $("#his-status").addEventListener("change", () => loadHisMessages().catch((err) => toast(errorText(err))));
  $("#his-refresh").addEventListener("click", () => loadHis(false).catch((err) => toast(errorText(err))));

  async function loadEndpoint(refill) {
    const current = ticket("his-endpoint");
    // A hospital chosen meanwhile loads again: an answer for the one before must not fill the form.
    const hospital = st.hospitalId;
    const answer = await get("/api/v1/his/endpoints");
    if (!current() || hospital !== st.hospitalId) return;
    drawEndpoint((answer.endpoints || []).find((e) => e.hospital_id === hospital) || null, refill);
  }
  function drawEndpoint(row, refill) {
    hisEndpoint = row;
    const box = $("#his-endpoint-state");
    box.dataset.hospitalId = st.hospitalId;
    if (!row) {
      box.replaceChildren(el("p", { class: "empty his-none" }, t("admin.his.no_endpoint")));
    } else {
      const open = row.circuit === "open";
      const state = el("span", null,
        el("span", { class: "badge " + (open ? "badge-danger" : "badge-ok"), id: "his-circuit", "data-circuit": row.circuit },
          t(open ? "admin.his.circuit.open" : "admin.his.circuit.closed")),
        open && row.open_until ? [" ", el("span", { class: "small" }, t("admin.his.open_until", { time: moment(row.open_until) }))] : null,
        row.enabled === false ? [" ", el("span", { class: "badge badge-warn" }, t("admin.his.disabled"))] : null);
      const dl = el("dl", { class: "facts", id: "his-endpoint-facts" });
      facts(dl, [
        [t("admin.his.connection"), state],
        [t("admin.his.address"), row.host + ":" + row.port, "code-ish his-address"],
        [t("admin.his.waiting"), String(row.waiting || 0), "his-waiting"],
        [t("admin.his.parked"), String(row.parked || 0), "his-parked"],
        // The last error matters while the link is down or failing; an old one after recovery would alarm.
        [t("admin.his.last_error"), open || row.failures ? row.last_error : null, "sms-error cell-wrap"],
        [t("admin.his.updated"), moment(row.updated_at)],
      ]);
      box.replaceChildren(dl);
    }
    const secret = $("#his-secret-state");
    // Known only from an answer that says so: the list of endpoints does not tell.
    const known = row && typeof row.inbound_secret_set === "boolean";
    secret.hidden = !known;
    secret.className = "badge " + (known && row.inbound_secret_set ? "badge-ok" : "");
    secret.dataset.set = known ? String(row.inbound_secret_set) : "";
    secret.textContent = known ? t(row.inbound_secret_set ? "admin.his.secret_set" : "admin.his.secret_unset") : "";
    if (refill) fillEndpointForm(row);
  }
  function fillEndpointForm(row) {
    clearFieldErrors(hisForm);
    $("#his-endpoint-saved").hidden = true;
    const r = row || {};
    hisForm.dataset.hospitalId = st.hospitalId;
    HIS_TEXT_FIELDS.forEach((k) => { hisForm.elements[k].value = r[k] || ""; });
    hisForm.port.value = r.port ?? "";
    hisForm.charset.value = r.charset || "UNICODE UTF-8";
    hisForm.rate_per_s.value = r.rate_per_s ?? 20;
    hisForm.enabled.checked = r.enabled !== false;
    hisForm.inbound_secret.value = "";
  }
  hisForm.addEventListener("input", () => { $("#his-endpoint-saved").hidden = true; });
  hisForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(hisForm);
    $("#his-endpoint-saved").hidden = true;
    const body = {};
    HIS_TEXT_FIELDS.forEach((k) => { const v = hisForm.elements[k].value.trim(); if (v) body[k] = v; });
    if (!body.host) { refuse(hisForm, "host", t("admin.his.bad_host")); return; }
    const port = Number(hisForm.port.value);
    if (!hisForm.port.value.trim() || !Number.isInteger(port) || port < 1 || port > 65535) { refuse(hisForm, "port", t("admin.his.bad_port")); return; }
    const rate = Number(hisForm.rate_per_s.value);
    if (!hisForm.rate_per_s.value.trim() || !Number.isFinite(rate) || rate < 0.1 || rate > 1000) { refuse(hisForm, "rate_per_s", t("admin.his.bad_rate")); return; }
    const secret = hisForm.inbound_secret.value;
    if (secret && (secret.length < 16 || secret.length > 128)) { refuse(hisForm, "inbound_secret", t("admin.his.bad_secret")); return; }
    Object.assign(body, { port: port, rate_per_s: rate, charset: hisForm.charset.value, enabled: hisForm.enabled.checked });
    if (secret) body.inbound_secret = secret;
    const button = $("#his-endpoint-save");
    button.disabled = true;
    try {
      const saved = await put("/api/v1/hospitals/" + enc(st.hospitalId) + "/his", body);
      // The answer has no backlog: keep the one read before.
      drawEndpoint(Object.assign({ waiting: 0, parked: 0 }, hisEndpoint || {}, saved), true);
      const done = $("#his-endpoint-saved");
      done.textContent = t("admin.his.saved", { rate: saved.rate_per_s });
      done.hidden = false;
      toast(t("common.saved"));
    } catch (err) { showFieldError(hisForm, err); }
    finally { button.disabled = false; hisForm.inbound_secret.value = ""; }
  });

  /* --- staff accounts --------------------------------------------------------------------------- */
  const staffForm = $("#staff-form");
  const ROLE_KEYS = ["clerk", "doctor", "hospital_admin", "operator", "analyst", "platform_admin"];
  function roleText(role) { return ROLE_KEYS.indexOf(role) >= 0 ? t("role." + role) : role; }
  function hospitalNameOf(id) { const h = st.hospitals.find((x) => x.hospital_id === id); return h ? h.name : ""; }
  async function doctorsOf(hospitalId) {
    if (hospitalId === st.hospitalId) return st.doctors;
    return (await get("/api/v1/hospitals/" + enc(hospitalId) + "/doctors")).doctors || [];
  }
  LOADERS.accounts = async () => {
    const current = ticket("accounts");
    await fillStaffForm();  // the form works even while the list cannot be read
    const answer = await get("/api/v1/staff");
    if (!current()) return;
    const staff = (answer.staff || []).filter((a) => st.me.role === "platform_admin" ? !a.hospital_id || a.hospital_id === st.hospitalId : true);
    const doctorsById = {};
    st.doctors.forEach((d) => { doctorsById[d.doctor_id] = d; });
    $("#staff-table tbody").replaceChildren(...(staff.length ? staff.map((a) => el("tr", { "data-username": a.username, class: a.disabled ? "is-disabled" : null },
      el("td", null, el("strong", null, a.name || "—"), a.doctor_id && doctorsById[a.doctor_id] ? el("div", { class: "muted small" }, deptName(doctorsById[a.doctor_id].department_id) + " · " + doctorsById[a.doctor_id].name) : null),
      el("td", { class: "code-ish" }, a.username),
      el("td", null, roleText(a.role)),
      el("td", null, hospitalNameOf(a.hospital_id) || "—"),
      el("td", null, el("span", { class: "badge " + (a.disabled ? "badge-danger" : "badge-ok"), "data-state": a.disabled ? "disabled" : "enabled" },
        a.disabled ? t("admin.acc.disabled") : t("admin.acc.enabled"))),
      el("td", null, a.username === st.me.subject ? null : el("button", { type: "button", class: "btn btn-ghost btn-small account-toggle",
        onclick: () => toggleAccount(a) }, a.disabled ? t("admin.acc.enable") : t("admin.acc.disable")))))
      : [emptyRow(6)]));
  };
  async function fillStaffForm() {
    const role = staffForm.role.value;
    const hospitals = st.me.role === "platform_admin" ? st.hospitals : st.hospitals.filter((h) => h.hospital_id === st.me.hospital_id);
    const keep = staffForm.hospital_id.value || st.hospitalId;
    staffForm.hospital_id.replaceChildren(...hospitals.map((h) => option(h.hospital_id, h.name, h.hospital_id === keep)));
    staffForm.hospital_id.disabled = hospitals.length < 2;
    $("#staff-doctor-field").hidden = role !== "doctor";
    if (role === "doctor") {
      const docs = await doctorsOf(staffForm.hospital_id.value);
      staffForm.doctor_id.replaceChildren(option("", t("common.choose")),
        ...docs.map((d) => option(d.doctor_id, d.name + " · " + titleText(d.title) + (d.hospital_id === st.hospitalId ? " · " + deptName(d.department_id) : ""))));
    }
  }
  staffForm.role.addEventListener("change", () => fillStaffForm().catch((err) => toast(errorText(err))));
  staffForm.hospital_id.addEventListener("change", () => fillStaffForm().catch((err) => toast(errorText(err))));
  staffForm.doctor_id.addEventListener("change", () => {
    const d = st.doctors.find((x) => x.doctor_id === staffForm.doctor_id.value);
    if (d && !staffForm.name.value) staffForm.name.value = d.name;
  });
  staffForm.addEventListener("reset", () => { hideError(formError(staffForm)); setTimeout(() => fillStaffForm().catch(() => {}), 0); });
  staffForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = formError(staffForm);
    hideError(box);
    const body = { username: staffForm.username.value.trim().toLowerCase(), password: staffForm.password.value, role: staffForm.role.value,
      hospital_id: staffForm.hospital_id.value, name: staffForm.name.value.trim() };
    if (!/^[a-z][a-z0-9._-]{2,63}$/.test(body.username)) { showError(box, t("admin.acc.username_hint")); staffForm.username.focus(); return; }
    if (body.password.length < 8) { showError(box, t("register.bad_password")); return; }
    if (!body.name) { showError(box, t("register.bad_name")); return; }
    if (body.role === "doctor") {
      body.doctor_id = staffForm.doctor_id.value;
      if (!body.doctor_id) { showError(box, t("admin.acc.pick_doctor")); return; }
    }
    try {
      await post("/api/v1/staff", body);
      toast(t("admin.acc.created", { username: body.username }));
      staffForm.reset();
      await LOADERS.accounts();
    } catch (err) { showError(box, err); }
  });
  async function toggleAccount(a) {
    try {
      await post("/api/v1/staff/" + enc(a.username) + (a.disabled ? "/enable" : "/disable"));
      toast(a.disabled ? t("admin.acc.enabled") : t("admin.acc.disabled"));
      await LOADERS.accounts();
    } catch (err) { toast(errorText(err)); }
  }

  /* --- hospitals: the platform registers them; a hospital admin edits its own details ----------- */
  const hospitalForm = $("#hospital-form");
  LOADERS.hospitals = async () => {
    const platform = st.me.role === "platform_admin";
    const list = platform ? st.hospitals : st.hospitals.filter((h) => h.hospital_id === st.me.hospital_id);
    $("#hospital-table tbody").replaceChildren(...list.map((h) => el("tr", { "data-hospital-id": h.hospital_id },
      el("td", null, el("strong", null, h.name), h.address ? el("div", { class: "muted small" }, h.address) : null),
      el("td", null, h.level || ""), el("td", null, h.contact || ""),
      el("td", null, el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => editHospital(h) }, t("common.edit"))))));
    if (!platform && !hospitalForm.dataset.editing && list.length) editHospital(list[0]);
  };
  function editHospital(h) {
    hospitalForm.dataset.editing = h.hospital_id;
    $("#hospital-id-field").hidden = true;
    ["name", "address", "contact"].forEach((k) => { hospitalForm[k].value = h[k] || ""; });
    hospitalForm.level.value = h.level || "三级甲等";
    $("#hospital-form-title").textContent = t("common.edit") + " · " + h.name;
  }
  hospitalForm.addEventListener("reset", () => {
    delete hospitalForm.dataset.editing;
    $("#hospital-id-field").hidden = st.me.role !== "platform_admin";
    $("#hospital-form-title").textContent = t("admin.hosp.new");
    hideError(formError(hospitalForm));
    if (st.me.role !== "platform_admin") setTimeout(() => LOADERS.hospitals(), 0);
  });
  hospitalForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = formError(hospitalForm);
    hideError(box);
    const body = { name: hospitalForm.name.value.trim(), level: hospitalForm.level.value, address: hospitalForm.address.value.trim(),
      contact: hospitalForm.contact.value.trim() };
    if (body.name.length < 2) { showError(box, t("admin.hosp.bad_name")); return; }
    try {
      if (hospitalForm.dataset.editing) {
        await command("update_hospital", Object.assign({ hospital_id: hospitalForm.dataset.editing }, body));
      } else {
        const id = hospitalForm.hospital_id.value.trim().toLowerCase();
        if (!/^[a-z0-9-]{2,40}$/.test(id)) { showError(box, t("admin.hosp.id_hint")); return; }
        await post("/api/v1/hospitals", Object.assign({ hospital_id: id }, body));
      }
      toast(t("common.saved"));
      hospitalForm.reset();
      await loadHospitals();
      fillHospitalSelect();
      await LOADERS.hospitals();
    } catch (err) { showError(box, err); }
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
  function fillHospitalSelect() {
    const me = st.me;
    const mine = me.role === "hospital_admin" ? st.hospitals.filter((h) => h.hospital_id === me.hospital_id) : st.hospitals;
    const keep = st.hospitalId;
    hospitalSelect.replaceChildren(...mine.map((h) => option(h.hospital_id, h.name, h.hospital_id === keep)));
    hospitalSelect.disabled = mine.length < 2;
    return mine;
  }
  requireRole(["hospital_admin", "platform_admin"]).then(async (me) => {
    st.me = me;
    staffHello(me);
    const platform = me.role === "platform_admin";
    $$("[data-platform-only]").forEach((n) => { n.hidden = !platform; n.disabled = !platform; });
    $("#hospital-id-field").hidden = !platform;
    $("#tab-hospitals").textContent = t(platform ? "admin.tab.hospitals" : "admin.tab.hospital");
    tabSelect.querySelector("option[value=hospitals]").textContent = t(platform ? "admin.tab.hospitals" : "admin.tab.hospital");
    await loadHospitals();
    const mine = fillHospitalSelect();
    hospitalSelect.addEventListener("change", () => chooseHospital(hospitalSelect.value));
    if (mine.length) await chooseHospital(mine[0].hospital_id);
  }).catch((err) => toast(errorText(err)));
})();
