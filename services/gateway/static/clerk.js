/* The booking window (预约挂号服务窗口): check a patient in with booking code + ID number (取号);
   find the bookings of a patient who lost the code, by resident ID or by code; 退号 with the amount
   to give back; the day's list of the hospital, by department and doctor, printable.
   window.ClerkDesk.refresh() redraws the day's list (live updates call it). */
(function () {
  "use strict";
  const App = window.App;
  const { t, el, $, get, post, uuid, facts, money, hm, longDay, periodText, todayISO, requireRole, staffHello, hospitalName,
    showError, hideError, errorText, toast } = App;
  const enc = encodeURIComponent;
  const form = $("#checkin-form");
  const button = $("#checkin-submit");
  const errorBox = $("#checkin-error");
  const result = $("#checkin-result");
  const recent = $("#recent");
  const RECENT_KEY = "clerk:recent";
  const st = { me: null, hospitalId: null, hospitalName: "", departments: [], doctors: [], findBy: "id", lastFind: null, refunding: null, key: null };

  function option(value, text) { return el("option", { value: value }, text); }
  function when(r) { return longDay(r.date) + " " + periodText(r.period) + (r.start ? " " + hm(r.start) : ""); }
  function refundDue(r) { return r.paid ? Number(r.fee || 0) : 0; }
  const REFUNDABLE = ["booked", "moved", "checked_in"];

  /* --- 取号 ------------------------------------------------------------------------------------ */
  function drawRecent() {
    const items = JSON.parse(sessionStorage.getItem(RECENT_KEY) || "[]");
    recent.replaceChildren(...items.map((r) => el("li", null, el("span", { class: "code" }, r.code), " · " + r.at + " · " +
      (r.refund !== undefined ? t("clerk.refund.given", { fee: Number(r.refund).toFixed(2) })
        : Number(r.fee_taken) > 0 ? t("clerk.fee_taken", { fee: Number(r.fee_taken).toFixed(2) }) : t("clerk.fee_paid")))));
  }
  function remember(item) {
    const items = JSON.parse(sessionStorage.getItem(RECENT_KEY) || "[]");
    items.unshift(Object.assign({ at: new Date().toTimeString().slice(0, 5) }, item));
    sessionStorage.setItem(RECENT_KEY, JSON.stringify(items.slice(0, 20)));
    drawRecent();
  }

  form.code.addEventListener("input", () => { form.code.value = form.code.value.toUpperCase().replace(/\s+/g, ""); });

  async function checkIn(code, idNumber) {
    const answer = await post("/api/v1/appointments/" + enc(code) + "/check-in", { id_number: idNumber });
    const paid = !(Number(answer.fee_taken) > 0);
    result.className = "result card ok";
    result.replaceChildren(
      el("div", { class: "big", id: "checkin-done" }, "✓ " + t("clerk.done")),
      el("div", { class: "code" }, code),
      el("div", { class: "fee-line", id: "fee-taken" }, paid ? t("clerk.fee_paid") : t("clerk.fee_taken", { fee: Number(answer.fee_taken).toFixed(2) })),
      answer.sequence_number ? el("p", null, t("booked.seq") + " " + answer.sequence_number) : null,
      el("p", { class: "muted small" }, t("status." + (answer.status || "checked_in"))));
    result.hidden = false;
    remember({ code: code, fee_taken: answer.fee_taken });
    refreshAll();
    return answer;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(errorBox);
    const code = form.code.value.trim().toUpperCase();
    const idNumber = form.id_number.value.trim().toUpperCase();
    if (!code || !idNumber) { showError(errorBox, t("clerk.lead")); return; }
    button.disabled = true;
    button.textContent = t("clerk.busy");
    try {
      await checkIn(code, idNumber);
      form.reset();
      form.code.focus();
    } catch (err) {
      result.hidden = true;
      showError(errorBox, err);
    } finally {
      button.disabled = false;
      button.textContent = t("clerk.submit");
    }
  });

  /* --- find a booking: by resident ID (the code is lost) or by code ------------------------------ */
  const findForm = $("#find-form");
  const findValue = $("#find-value");
  const foundBox = $("#found");
  const foundPatient = $("#found-patient");
  function setFindBy(kind) {
    st.findBy = kind;
    $("#find-by-id").setAttribute("aria-pressed", kind === "id" ? "true" : "false");
    $("#find-by-code").setAttribute("aria-pressed", kind === "code" ? "true" : "false");
    $("#find-label").textContent = kind === "id" ? t("clerk.id") : t("clerk.code");
    $("#find-hint").textContent = kind === "id" ? t("clerk.find.hint") : t("clerk.find.hint_code");
    findValue.maxLength = kind === "id" ? 18 : 8;
    findValue.className = kind === "code" ? "input-code" : "";
    findValue.value = "";
    findValue.focus();
  }
  $("#find-by-id").addEventListener("click", () => setFindBy("id"));
  $("#find-by-code").addEventListener("click", () => setFindBy("code"));
  findValue.addEventListener("input", () => { findValue.value = findValue.value.toUpperCase().replace(/\s+/g, ""); });

  async function find(kind, value) {
    const box = $("#find-error");
    hideError(box);
    foundPatient.hidden = true;
    try {
      let rows, patient = null;
      if (kind === "id") {
        const answer = await get("/api/v1/hospitals/" + enc(st.hospitalId) + "/patient-bookings?id_number=" + enc(value));
        patient = answer.patient || null;
        rows = answer.appointments || [];
      } else {
        rows = [await get("/api/v1/appointments/by-code/" + enc(value))];
      }
      st.lastFind = { kind: kind, value: value };
      if (patient) {
        foundPatient.textContent = t("clerk.find.patient", { name: patient.name_masked || "", id: patient.id_masked || "", phone: patient.phone_masked || "" });
        foundPatient.hidden = false;
      }
      drawFound(rows, kind === "id" ? value : null);
    } catch (err) {
      foundBox.replaceChildren();
      showError(box, err.status === 404 ? t(kind === "id" ? "clerk.find.none_id" : "clerk.find.none_code") : err);
    }
  }
  findForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = findValue.value.trim().toUpperCase();
    if (st.findBy === "id" ? value.length !== 18 : value.length < 4) {
      showError($("#find-error"), t(st.findBy === "id" ? "clerk.find.bad_id" : "clerk.find.bad_code"));
      return;
    }
    find(st.findBy, value);
  });

  function drawFound(rows, idNumber) {
    const today = todayISO();
    const sorted = rows.slice().sort((a, b) => (a.date === b.date ? (a.start || "") < (b.start || "") ? -1 : 1 : a.date < b.date ? 1 : -1));
    foundBox.replaceChildren(...(sorted.length ? sorted.map((r) => el("article", { class: "found-row", "data-code": r.code, "data-status": r.status },
      el("div", { class: "top" }, el("strong", null, when(r)), window.DayList.label(r)),
      el("div", null, [r.department_name, r.doctor_name].filter(Boolean).join(" · ")),
      el("div", { class: "muted small" }, [t("me.seq", { n: r.sequence_number }), r.name_masked, t("channel." + r.channel),
        money(r.fee) + (r.paid ? " " + t("daylist.paid") : "")].filter(Boolean).join(" · "), " · ", el("span", { class: "code" }, r.code)),
      el("div", { class: "row-actions" },
        (r.status === "booked" || r.status === "moved") && r.date === today ? el("button", { type: "button", class: "btn btn-primary btn-small found-checkin",
          onclick: (e) => checkInFound(r, idNumber, e.target) }, t("clerk.submit")) : null,
        REFUNDABLE.indexOf(r.status) >= 0 ? el("button", { type: "button", class: "btn btn-ghost btn-small found-refund",
          onclick: () => askRefund(r) }, t("clerk.refund")) : null)))
      : [el("p", { class: "muted" }, t("admin.lists.empty"))]));
  }

  async function checkInFound(r, idNumber, btn) {
    if (!idNumber) {  // found by code: the ID card is still to be checked
      form.code.value = r.code;
      form.id_number.focus();
      form.scrollIntoView({ block: "center" });
      return;
    }
    btn.disabled = true;
    try { await checkIn(r.code, idNumber); }
    catch (err) { showError($("#find-error"), err); btn.disabled = false; }
  }

  /* --- 退号 ------------------------------------------------------------------------------------- */
  const dialog = $("#confirm");
  const okButton = $("#confirm-ok");
  const confirmError = $("#confirm-error");
  const reasonField = el("label", { class: "field", id: "refund-reason-field" }, el("span", null, t("clerk.refund.reason")),
    el("input", { id: "refund-reason", name: "reason", maxlength: "200", value: t("clerk.refund.reason_default") }));
  $("#confirm-note").before(reasonField);
  function askRefund(r) {
    st.refunding = r;
    st.key = uuid();
    hideError(confirmError);
    $("#confirm-title").textContent = t("clerk.refund.title");
    facts($("#confirm-facts"), [
      [t("confirm.patient"), [r.name_masked, r.id_masked].filter(Boolean).join(" ")],
      [t("confirm.department"), r.department_name],
      [t("confirm.doctor"), r.doctor_name],
      [t("confirm.time"), when(r)],
      [t("booked.seq"), String(r.sequence_number ?? "")],
      [t("booked.code"), r.code],
      [t("clerk.refund.amount"), money(refundDue(r)), "fee"],
    ]);
    $("#confirm-note").textContent = refundDue(r) > 0 ? t("clerk.refund.give", { fee: refundDue(r).toFixed(2) }) : t("clerk.refund.nothing");
    $("#refund-reason").value = t("clerk.refund.reason_default");
    okButton.disabled = false;
    okButton.textContent = t("clerk.refund.ok");
    okButton.className = "btn btn-danger";
    dialog.showModal();
  }
  $("#confirm-cancel").addEventListener("click", () => dialog.close());
  $("#confirm-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const r = st.refunding;
    const reason = $("#refund-reason").value.trim() || t("clerk.refund.reason_default");
    okButton.disabled = true;
    try {
      const answer = await post("/api/v1/appointments/" + enc(r.code) + "/refund", { reason: reason }, { idempotencyKey: st.key });
      dialog.close();
      const due = Number(answer.refund_due || 0);
      result.className = "result card ok";
      result.replaceChildren(
        el("div", { class: "big", id: "refund-done" }, "✓ " + t("clerk.refund.done")),
        el("div", { class: "code" }, r.code),
        el("div", { class: "fee-line", id: "refund-due" }, due > 0 ? t("clerk.refund.give", { fee: due.toFixed(2) }) : t("clerk.refund.nothing")),
        el("p", { class: "muted small" }, answer.place_released ? t("clerk.refund.released") : t("clerk.refund.not_released")));
      result.hidden = false;
      remember({ code: r.code, refund: due });
      toast(t("clerk.refund.done"));
      refreshAll();
    } catch (err) {
      showError(confirmError, err);
      okButton.disabled = err instanceof App.ApiError;
    }
  });

  /* --- the day's list ---------------------------------------------------------------------------- */
  const dayInput = $("#daylist-date");
  const deptSelect = $("#daylist-dept");
  const doctorSelect = $("#daylist-doctor");
  const listBox = $("#daylist");
  let listTicket = 0;
  function fillDoctors() {
    const keep = doctorSelect.value;
    const docs = st.doctors.filter((d) => !deptSelect.value || d.department_id === deptSelect.value);
    doctorSelect.replaceChildren(option("", t("clerk.all_doctors")), ...docs.map((d) => option(d.doctor_id, d.name)));
    if (docs.some((d) => d.doctor_id === keep)) doctorSelect.value = keep;
  }
  async function loadDayList() {
    if (!st.hospitalId) return;
    const mine = ++listTicket;
    const day = dayInput.value || todayISO();
    dayInput.value = day;
    hideError($("#daylist-error"));
    let path = "/api/v1/hospitals/" + enc(st.hospitalId) + "/day-list?date=" + day;
    if (deptSelect.value) path += "&department_id=" + enc(deptSelect.value);
    if (doctorSelect.value) path += "&doctor_id=" + enc(doctorSelect.value);
    try {
      const answer = await get(path);
      if (mine !== listTicket) return;
      if (answer.hospital_name) st.hospitalName = answer.hospital_name;
      $("#print-title").textContent = t("clerk.print_title", { hospital: st.hospitalName, date: longDay(day) });
      window.DayList.render(listBox, answer.appointments || [], {
        date: day, columns: ["seq", "name", "id", "phone", "channel", "fee", "code", "status"],
        actions: (r) => REFUNDABLE.indexOf(r.status) >= 0 ? el("div", { class: "row-actions" },
          (r.status === "booked" || r.status === "moved") && day === todayISO() ? el("button", { type: "button", class: "btn btn-ghost btn-small",
            onclick: () => { form.code.value = r.code; form.id_number.focus(); form.scrollIntoView({ block: "center" }); } }, t("clerk.submit")) : null,
          el("button", { type: "button", class: "btn btn-ghost btn-small list-refund", onclick: () => askRefund(r) }, t("clerk.refund"))) : null,
      });
    } catch (err) {
      if (mine !== listTicket) return;
      listBox.replaceChildren();
      showError($("#daylist-error"), err);
    }
  }
  function refreshAll() {
    loadDayList();
    if (st.lastFind) find(st.lastFind.kind, st.lastFind.value);
  }
  dayInput.addEventListener("change", loadDayList);
  deptSelect.addEventListener("change", () => { fillDoctors(); loadDayList(); });
  doctorSelect.addEventListener("change", loadDayList);
  $("#daylist-refresh").addEventListener("click", loadDayList);
  $("#daylist-print").addEventListener("click", () => window.print());

  // Live: any booking change at this hospital on the shown day re-reads the list (debounced).
  let liveSub = null;
  const reloadSoon = window.App.live ? window.App.live.debounced(loadDayList, 200, 1000) : loadDayList;
  function listen(hospitalId) {
    if (!window.App.live) return;
    const onNotice = (n) => { if (n.type === "resync" || !n.date || n.date === (dayInput.value || todayISO())) reloadSoon(); };
    if (liveSub) liveSub.update({ hospital: hospitalId }); else liveSub = window.App.live({ hospital: hospitalId }, onNotice);
  }

  async function chooseHospital(id) {
    st.hospitalId = id;
    listen(id);
    const [ds, docs] = await Promise.all([
      get("/api/v1/hospitals/" + enc(id) + "/departments"), get("/api/v1/hospitals/" + enc(id) + "/doctors")]);
    st.departments = ds.departments || [];
    st.doctors = docs.doctors || [];
    const staffed = st.departments.filter((d) => st.doctors.some((doc) => doc.department_id === d.department_id));
    deptSelect.replaceChildren(option("", t("clerk.all_departments")), ...staffed.map((d) => option(d.department_id, d.name)));
    fillDoctors();
    await loadDayList();
  }

  window.ClerkDesk = { refresh: loadDayList, hospitalId: () => st.hospitalId, date: () => dayInput.value || todayISO() };

  requireRole(["clerk", "hospital_admin", "platform_admin"]).then(async (me) => {
    st.me = me;
    staffHello(me);
    drawRecent();
    form.code.focus();
    if (me.hospital_id) {
      st.hospitalName = await hospitalName(me);
      await chooseHospital(me.hospital_id);
      return;
    }
    // A platform admin has no hospital of their own: they choose one.
    const hospitals = (await get("/api/v1/hospitals")).hospitals || [];
    const select = $("#clerk-hospital");
    select.replaceChildren(...hospitals.map((h) => option(h.hospital_id, h.name)));
    $("#clerk-hospital-field").hidden = false;
    const pick = () => { st.hospitalName = (hospitals.find((h) => h.hospital_id === select.value) || {}).name || ""; return chooseHospital(select.value); };
    select.addEventListener("change", () => pick().catch((err) => toast(errorText(err))));
    if (hospitals.length) await pick();
  }).catch((err) => toast(errorText(err)));
})();
