/* A doctor's day list (医生当日名单): the doctor sees their own (/api/v1/me answers doctor_id); a clerk
   or hospital admin picks a doctor of their hospital. One table per session, printable.
   window.DoctorList.refresh() redraws it. */
(function () {
  "use strict";
  const { t, el, $, get, longDay, todayISO, titleText, requireRole, staffHello, hospitalName, showError, hideError, errorText, toast } = window.App;
  const enc = encodeURIComponent;
  const st = { me: null, doctors: [], doctorId: null, hospitalName: "" };
  const dateInput = $("#doctor-date");
  const pick = $("#doctor-pick");
  const box = $("#doctor-list");
  let ticket = 0;

  const params = new URLSearchParams(location.search);
  dateInput.value = /^\d{4}-\d{2}-\d{2}$/.test(params.get("date") || "") ? params.get("date") : todayISO();

  async function load() {
    if (!st.doctorId) { box.replaceChildren(el("p", { class: "empty" }, t("doctor.pick"))); return; }
    const mine = ++ticket;
    const day = dateInput.value || todayISO();
    hideError($("#doctor-error"));
    try {
      const answer = await get("/api/v1/doctors/" + enc(st.doctorId) + "/day-list?date=" + day);
      if (mine !== ticket) return;
      const rows = answer.appointments || [];
      const doc = st.doctors.find((d) => d.doctor_id === st.doctorId) || {};
      const name = (rows[0] && rows[0].doctor_name) || doc.name || st.me.name || "";
      $("#doctor-sheet-title").textContent = t("doctor.sheet", { doctor: name, date: longDay(day) });
      $("#doctor-sheet-sub").textContent = [answer.hospital_name || st.hospitalName, (rows[0] && rows[0].department_name) || "",
        doc.title ? titleText(doc.title) : ""].filter(Boolean).join(" · ");
      window.DayList.render(box, rows, { date: day, flat: true, columns: ["seq", "name", "id", "channel", "arrival", "status"],
        empty: t("doctor.empty") });
    } catch (err) {
      if (mine !== ticket) return;
      box.replaceChildren();
      showError($("#doctor-error"), err);
    }
  }
  dateInput.addEventListener("change", load);
  pick.addEventListener("change", () => { st.doctorId = pick.value || null; load(); });
  $("#doctor-refresh").addEventListener("click", load);
  $("#doctor-print").addEventListener("click", () => window.print());
  window.DoctorList = { refresh: load };

  requireRole(["doctor", "clerk", "hospital_admin"]).then(async (me) => {
    st.me = me;
    staffHello(me);
    st.hospitalName = await hospitalName(me);
    if (me.hospital_id) st.doctors = (await get("/api/v1/hospitals/" + enc(me.hospital_id) + "/doctors")).doctors || [];
    if (me.role === "doctor") {
      st.doctorId = me.doctor_id || null;
      if (!st.doctorId) { showError($("#doctor-error"), t("doctor.no_doctor")); box.replaceChildren(); return; }
    } else {
      pick.replaceChildren(el("option", { value: "" }, t("common.choose")),
        ...st.doctors.map((d) => el("option", { value: d.doctor_id }, d.name + " · " + titleText(d.title))));
      $("#doctor-pick-field").hidden = false;
      const wanted = params.get("doctor");
      if (wanted && st.doctors.some((d) => d.doctor_id === wanted)) { pick.value = wanted; st.doctorId = wanted; }
    }
    await load();
  }).catch((err) => toast(errorText(err)));
})();
