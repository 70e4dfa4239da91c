/* A department's week: the schedule table; an open session opens the confirm dialog; booking leads
   to the success page. */
(function () {
  "use strict";
  const App = window.App;
  const { t, el, get, post, uuid, facts, money, whenText, titleText, todayISO, addDays, shortDay, errorText,
    showError, hideError, whoami, loginUrl } = App;
  const page = document.getElementById("schedule-page");
  const departmentId = page.dataset.departmentId;
  const params = new URLSearchParams(location.search);
  const today = todayISO();
  const from = /^\d{4}-\d{2}-\d{2}$/.test(params.get("from") || "") ? params.get("from") : today;
  const box = document.getElementById("schedule");
  const dialog = document.getElementById("confirm");
  const okButton = document.getElementById("confirm-ok");
  const errorBox = document.getElementById("confirm-error");
  const context = { hospital: null, department: null, doctors: {} };
  let picked = null;
  let pickKey = null;

  function weekUrl(day) {
    const p = new URLSearchParams(location.search);
    p.set("from", day);
    p.delete("lang");
    return location.pathname + "?" + p.toString();
  }
  const prev = document.getElementById("prev-week");
  const next = document.getElementById("next-week");
  next.href = weekUrl(addDays(from, 7));
  if (from <= today) { prev.setAttribute("aria-disabled", "true"); prev.classList.add("disabled"); prev.removeAttribute("href"); }
  else prev.href = weekUrl(addDays(from, -7) < today ? today : addDays(from, -7));
  document.getElementById("week-label").textContent = shortDay(from) + " – " + shortDay(addDays(from, 6));

  async function findContext() {
    const hs = (await get("/api/v1/hospitals")).hospitals || [];
    const wanted = params.get("h");
    const candidates = wanted ? hs.filter((h) => h.hospital_id === wanted) : hs;
    for (const h of candidates) {
      const ds = (await get("/api/v1/hospitals/" + encodeURIComponent(h.hospital_id) + "/departments")).departments || [];
      const d = ds.find((x) => x.department_id === departmentId);
      if (d) {
        context.hospital = h; context.department = d;
        get("/api/v1/hospitals/" + encodeURIComponent(h.hospital_id) + "/doctors").then((answer) => {
          (answer.doctors || []).forEach((doc) => { context.doctors[doc.doctor_id] = doc; });
          if (lastSessions) draw(lastSessions);
        }).catch(() => {});
        return;
      }
    }
  }

  function showContext() {
    const h = context.hospital, d = context.department;
    if (!h || !d) return;
    document.getElementById("dept-name").textContent = d.name;
    document.getElementById("hospital-name").textContent = h.name + (d.path && d.path !== d.name ? " · " + d.path : "");
    const crumb = document.getElementById("crumb-hospital");
    crumb.textContent = h.name; crumb.href = "/hospitals/" + encodeURIComponent(h.hospital_id);
    document.getElementById("crumb-department").textContent = d.name;
    document.title = d.name + " · " + h.name;
  }

  let lastSessions = null;
  function draw(sessions) {
    lastSessions = sessions;
    window.Schedule.render(box, sessions, { from: from, channel: "web", onPick: pick, doctors: context.doctors });
  }

  function load() {
    return get("/api/v1/departments/" + encodeURIComponent(departmentId) + "/schedule?from=" + from + "&to=" + addDays(from, 6))
      .then((answer) => draw(answer.sessions || []))
      .catch((err) => {
        box.removeAttribute("aria-busy");
        box.replaceChildren(el("p", { class: "form-error" }, err.status === 404 ? t("dept.notfound") : errorText(err)));
      });
  }

  async function pick(session) {
    picked = session;
    pickKey = uuid(); // one booking action: the same key on every retry of it
    hideError(errorBox);
    const me = await whoami();
    facts(document.getElementById("confirm-facts"), [
      [t("confirm.hospital"), context.hospital ? context.hospital.name : ""],
      [t("confirm.department"), context.department ? context.department.name : ""],
      [t("confirm.doctor"), session.doctor.name + " · " + titleText(session.doctor.title)],
      [t("confirm.time"), whenText(session)],
      [t("confirm.fee"), money(session.fee), "fee"],
      [t("confirm.patient"), me && me.role === "patient" ? me.name : ""],
    ]);
    const note = document.getElementById("confirm-note");
    note.replaceChildren(el("span", null, t("confirm.feenote")), el("br"), el("span", null, t("confirm.note")));
    if (!me || me.role !== "patient") {
      okButton.textContent = t("confirm.login");
      okButton.dataset.action = "login";
    } else {
      okButton.textContent = t("confirm.ok");
      okButton.dataset.action = "book";
    }
    okButton.disabled = false;
    dialog.showModal();
  }

  document.getElementById("confirm-cancel").addEventListener("click", () => dialog.close());
  document.getElementById("confirm-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (okButton.dataset.action === "login") { location.assign(loginUrl()); return; }
    okButton.disabled = true;
    okButton.textContent = t("confirm.busy");
    hideError(errorBox);
    try {
      const answer = await post("/api/v1/appointments", { session_id: picked.session_id }, { idempotencyKey: pickKey });
      sessionStorage.setItem("booked:" + answer.appointment_id, JSON.stringify({
        answer: answer, session: picked,
        hospital: context.hospital && context.hospital.name, department: context.department && context.department.name,
      }));
      location.assign("/booked/" + encodeURIComponent(answer.appointment_id));
    } catch (err) {
      if (err.status === 401) { location.assign(loginUrl()); return; }
      showError(errorBox, err);
      okButton.textContent = t("confirm.ok");
      // A refusal is final for this key; a network failure may be retried with the same key.
      if (err instanceof App.ApiError) { okButton.disabled = true; pickKey = uuid(); load(); }
      else okButton.disabled = false;
    }
  });

  /* Live: another patient's booking or a stop changes this week's places; re-read, debounced. */
  if (App.live) {
    const refresh = App.live.debounced(load, 100);
    const last = addDays(from, 6);
    App.live({ department: departmentId }, (n) => {
      const shown = lastSessions && lastSessions.some((s) => s.session_id === n.session_id);
      if (n.type === "resync" || shown || (n.date && n.date >= from && n.date <= last)) refresh();
    });
  }

  findContext().then(showContext).catch(() => {});
  load();
})();
