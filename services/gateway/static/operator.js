/* The 12580 hotline console: find (or register) the caller by ID number, choose hospital, department
   and session, book on the phone channel (the fee is charged), read the code back, cancel. */
(function () {
  "use strict";
  const App = window.App;
  const { t, el, get, post, uuid, facts, money, whenText, titleText, codeBoxes, todayISO, addDays, showError, hideError,
    requireRole, staffHello, errorText, toast } = App;
  const { enrich, card, confirmCancel } = window.Bookings;
  const state = { caller: null, hospitals: [], hospital: null, department: null, session: null, key: null };
  const findForm = document.getElementById("find-form");
  const regForm = document.getElementById("caller-register");
  const callerBox = document.getElementById("caller");
  const hospitalSelect = document.getElementById("op-hospital");
  const deptSelect = document.getElementById("op-department");
  const scheduleBox = document.getElementById("schedule");
  const confirmDialog = document.getElementById("confirm");
  const okButton = document.getElementById("confirm-ok");
  const confirmError = document.getElementById("confirm-error");

  function option(value, text) { return el("option", { value: value }, text); }

  /* --- the caller ---------------------------------------------------------------------------- */
  findForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const errorBox = document.getElementById("find-error");
    hideError(errorBox);
    regForm.hidden = true;
    const id = findForm.id_number.value.trim().toUpperCase();
    if (!id) return;
    try {
      setCaller(await get("/api/v1/patients?id_number=" + encodeURIComponent(id)));
    } catch (err) {
      if (err.status === 404) { regForm.hidden = false; document.getElementById("new-name").focus(); }
      else showError(errorBox, err);
    }
  });

  window.App.smsCodeButton(document.getElementById("new-send-code"), regForm.phone, "register",
    document.getElementById("register-error"));

  regForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const errorBox = document.getElementById("register-error");
    hideError(errorBox);
    try {
      const answer = await post("/api/v1/patients", {
        name: regForm.name.value.trim(), id_number: findForm.id_number.value.trim().toUpperCase(), phone: regForm.phone.value.trim(),
        sms_code: regForm.sms_code.value.trim(),
      });
      regForm.hidden = true;
      regForm.reset();
      toast(t("op.registered"));
      setCaller(answer);
    } catch (err) { showError(errorBox, err); }
  });

  document.getElementById("change-caller").addEventListener("click", () => resetCaller());

  function resetCaller() {
    state.caller = null;
    callerBox.hidden = true;
    findForm.hidden = false;
    findForm.reset();
    document.getElementById("op-first").hidden = false;
    findForm.id_number.focus();
    if (state.department) loadSchedule();
  }

  function setCaller(patient) {
    state.caller = patient;
    findForm.hidden = true;
    callerBox.hidden = false;
    document.getElementById("caller-masked").textContent = patient.id_masked || patient.patient_id;
    document.getElementById("caller-phone").textContent = patient.phone_masked || "";
    document.getElementById("op-first").hidden = true;
    loadCallerBookings();
    if (state.department) loadSchedule();
  }

  /* The caller's bookings; `known` are answers just given (the list read model follows a moment later). */
  const known = {};
  async function loadCallerBookings() {
    const box = document.getElementById("caller-bookings");
    if (!state.caller) return;
    try {
      const answer = await get("/api/v1/appointments?patient_id=" + encodeURIComponent(state.caller.patient_id));
      const list = await enrich((answer.appointments || []).filter((a) => a.date >= todayISO())
        .map((a) => Object.assign({}, a, known[a.appointment_id] || {})));
      box.replaceChildren(...(list.length ? list.map((a) => card(a, { compact: true, onCancel: cancel }))
        : [el("p", { class: "muted small" }, t("common.none"))]));
    } catch (err) { box.replaceChildren(el("p", { class: "form-error" }, errorText(err))); }
  }

  async function cancel(a) {
    const answer = await confirmCancel(a);
    if (!answer) return;
    known[a.appointment_id] = { status: answer.status || "cancelled" };
    toast(t("me.cancel.done") + (answer.refund_due ? " · " + t("me.refund", { fee: answer.refund_due }) : ""));
    loadCallerBookings();
    if (state.department) loadSchedule();
  }

  /* --- the session --------------------------------------------------------------------------- */
  async function loadHospitals() {
    state.hospitals = (await get("/api/v1/hospitals")).hospitals || [];
    hospitalSelect.replaceChildren(option("", t("common.choose")), ...state.hospitals.map((h) => option(h.hospital_id, h.name)));
  }

  hospitalSelect.addEventListener("change", async () => {
    state.hospital = state.hospitals.find((h) => h.hospital_id === hospitalSelect.value) || null;
    state.department = null;
    scheduleBox.replaceChildren();
    deptSelect.disabled = true;
    if (!state.hospital) return;
    const ds = (await get("/api/v1/hospitals/" + encodeURIComponent(state.hospital.hospital_id) + "/departments")).departments || [];
    state.departments = ds;
    deptSelect.replaceChildren(option("", t("common.choose")), ...ds.map((d) => option(d.department_id, "\u3000".repeat(d.depth || 0) + d.name)));
    deptSelect.disabled = false;
  });

  deptSelect.addEventListener("change", () => {
    state.department = (state.departments || []).find((d) => d.department_id === deptSelect.value) || null;
    if (state.department) loadSchedule(); else scheduleBox.replaceChildren();
    if (live) live.update({ department: state.department ? state.department.department_id : null });
  });

  /* Live: the chosen department's places change under the operator's eyes; re-read, debounced. */
  const live = App.live ? App.live({}, (n) => {
    const from = todayISO();
    if (state.department && (n.type === "resync" || !n.date || (n.date >= from && n.date <= addDays(from, 13)))) {
      refreshSchedule();
    }
  }) : null;
  const refreshSchedule = App.live ? App.live.debounced(() => { if (state.department) loadSchedule(); }) : null;

  async function loadSchedule() {
    const from = todayISO();
    scheduleBox.setAttribute("aria-busy", "true");
    try {
      const answer = await get("/api/v1/departments/" + encodeURIComponent(state.department.department_id) + "/schedule?from=" + from + "&to=" + addDays(from, 13));
      window.Schedule.render(scheduleBox, answer.sessions || [], { from: from, channel: "phone", layout: "list", onPick: pick });
    } catch (err) {
      scheduleBox.removeAttribute("aria-busy");
      scheduleBox.replaceChildren(el("p", { class: "form-error" }, errorText(err)));
    }
  }

  function pick(session) {
    if (!state.caller) { document.getElementById("caller-id").focus(); showError(document.getElementById("find-error"), t("op.first")); return; }
    state.session = session;
    state.key = uuid();
    hideError(confirmError);
    facts(document.getElementById("confirm-facts"), [
      [t("confirm.patient"), state.caller.id_masked],
      [t("confirm.hospital"), state.hospital.name],
      [t("confirm.department"), state.department.name],
      [t("confirm.doctor"), session.doctor.name + " · " + titleText(session.doctor.title)],
      [t("confirm.time"), whenText(session)],
      [t("confirm.channel"), t("channel.phone")],
      [t("confirm.fee"), money(session.fee), "fee"],
    ]);
    document.getElementById("confirm-note").textContent = t("op.charge", { fee: Number(session.fee).toFixed(2) });
    okButton.disabled = false;
    okButton.textContent = t("confirm.ok");
    confirmDialog.showModal();
  }

  document.getElementById("confirm-cancel").addEventListener("click", () => confirmDialog.close());
  document.getElementById("confirm-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    okButton.disabled = true;
    okButton.textContent = t("confirm.busy");
    try {
      const answer = await post("/api/v1/appointments", { session_id: state.session.session_id, patient_id: state.caller.patient_id },
        { idempotencyKey: state.key });
      confirmDialog.close();
      readBack(answer, state.session);
      loadCallerBookings();
      loadSchedule();
    } catch (err) {
      showError(confirmError, err);
      okButton.textContent = t("confirm.ok");
      okButton.disabled = err instanceof App.ApiError; // a refusal stands; a network failure may be retried (same key)
    }
  });

  /* --- read the code back --------------------------------------------------------------------- */
  function readBack(answer, session) {
    const dialog = document.getElementById("readback");
    const box = document.getElementById("readback-code");
    box.replaceChildren(codeBoxes(answer.code, true));
    box.dataset.code = answer.code;
    facts(document.getElementById("readback-facts"), [
      [t("booked.seq"), String(answer.sequence_number)],
      [t("booked.arrival_label"), answer.arrival_window || ""],
      [t("confirm.doctor"), session.doctor.name + " · " + titleText(session.doctor.title)],
      [t("confirm.time"), whenText(session)],
      [t("confirm.fee"), answer.paid ? t("op.paid", { fee: Number(session.fee).toFixed(2) }) : money(session.fee), "fee"],
    ]);
    dialog.showModal();
  }
  document.getElementById("readback-close").addEventListener("click", () => document.getElementById("readback").close());
  document.getElementById("next-caller").addEventListener("click", () => { document.getElementById("readback").close(); resetCaller(); });

  requireRole(["operator"]).then((me) => { staffHello(me); return loadHospitals(); })
    .catch((err) => showError(document.getElementById("find-error"), err));
})();
