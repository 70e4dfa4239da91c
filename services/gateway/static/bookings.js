/* Bookings as cards (my bookings, the caller's bookings on the hotline) and the cancel dialog. */
(function () {
  "use strict";
  const { t, el, get, post, uuid, facts, money, longDay, periodText, hm, titleText, moment, showError, hideError } = window.App;
  const ACTIVE = ["booked", "moved"];
  let hospitalsOnce = null;

  /* Names of hospital, department and doctor, and the cut-off, for each booking (the list has ids). */
  async function enrich(list) {
    hospitalsOnce = hospitalsOnce || get("/api/v1/hospitals").then((a) => a.hospitals || []).catch(() => []);
    const hospitals = await hospitalsOnce;
    const deptNames = {};
    const hospitalIds = Array.from(new Set(list.map((a) => a.hospital_id).filter(Boolean)));
    await Promise.all(hospitalIds.map((h) => get("/api/v1/hospitals/" + encodeURIComponent(h) + "/departments")
      .then((a) => (a.departments || []).forEach((d) => { deptNames[d.department_id] = d.name; })).catch(() => {})));
    const sessions = {};
    const pairs = Array.from(new Set(list.filter((a) => a.department_id && a.date).map((a) => a.department_id + "|" + a.date))).slice(0, 30);
    await Promise.all(pairs.map((p) => {
      const [dept, day] = p.split("|");
      return get("/api/v1/departments/" + encodeURIComponent(dept) + "/schedule?from=" + day + "&to=" + day)
        .then((a) => (a.sessions || []).forEach((s) => { sessions[s.session_id] = s; })).catch(() => {});
    }));
    return list.map((a) => {
      const h = hospitals.find((x) => x.hospital_id === a.hospital_id);
      return Object.assign({}, a, {
        hospital_name: h ? h.name : a.hospital_id, department_name: deptNames[a.department_id] || "",
        session: sessions[a.session_id] || null,
      });
    });
  }

  function cancellable(a) {
    if (ACTIVE.indexOf(a.status) < 0) return false;
    const closes = a.session && a.session.closes_at;
    return closes ? Date.now() < new Date(closes).getTime() : a.date > window.App.todayISO();
  }

  function statusBadge(status) {
    const cls = { booked: "badge-brand", moved: "badge-warn", checked_in: "badge-ok", cancelled: "", no_show: "badge-danger", lapsed: "badge-danger" }[status];
    return el("span", { class: "badge " + (cls || ""), "data-status": status }, t("status." + status));
  }

  function card(a, options) {
    const o = options || {};
    const s = a.session;
    const doctor = s ? s.doctor.name + " · " + titleText(s.doctor.title) : "";
    const time = longDay(a.date) + " " + periodText(a.period) + " " + hm(a.start) + (s && s.end ? "–" + hm(s.end) : "");
    const can = cancellable(a);
    const closes = s && s.closes_at;
    return el("article", { class: "card booking st-" + a.status + (o.compact ? " compact" : ""), "data-appointment-id": a.appointment_id, "data-code": a.code },
      el("div", { class: "booking-top" },
        el("div", null, el("div", { class: "booking-when" }, time),
          el("div", { class: "booking-where" }, [a.hospital_name, a.department_name, doctor].filter(Boolean).join(" · "))),
        statusBadge(a.status)),
      el("div", { class: "booking-code" },
        el("span", null, t("me.code") + " ", el("span", { class: "code" }, a.code)),
        el("span", null, t("me.seq", { n: a.sequence_number })),
        a.arrival_window ? el("span", null, t("booked.arrival", { window: a.arrival_window })) : null,
        a.fee ? el("span", null, money(a.fee) + " · " + t("channel." + a.channel)) : null),
      ACTIVE.indexOf(a.status) >= 0 ? el("div", { class: "booking-actions" },
        el("span", { class: "muted small" }, can ? (closes ? t("me.cancel.until", { time: moment(closes) }) : "") : t("me.cancel.closed")),
        can && o.onCancel ? el("button", { type: "button", class: "btn btn-ghost btn-small cancel-booking", onclick: () => o.onCancel(a) }, t("me.cancel")) : null)
        : null);
  }

  /* The cancel dialog of the page (#cancel-dialog): resolves with the API's answer, or null. */
  function confirmCancel(a) {
    const dialog = document.getElementById("cancel-dialog");
    const yes = document.getElementById("cancel-yes");
    const errorBox = document.getElementById("cancel-error");
    const key = uuid();
    hideError(errorBox);
    yes.disabled = false;
    facts(document.getElementById("cancel-facts"), [
      [t("confirm.hospital"), a.hospital_name], [t("confirm.department"), a.department_name],
      [t("confirm.time"), longDay(a.date) + " " + periodText(a.period) + " " + hm(a.start)],
      [t("me.code"), a.code],
    ]);
    return new Promise((resolve) => {
      const form = dialog.querySelector("form");
      const keep = document.getElementById("cancel-keep");
      function done(result) {
        form.removeEventListener("submit", submit);
        keep.removeEventListener("click", onKeep);
        dialog.removeEventListener("cancel", onKeep);
        if (dialog.open) dialog.close();
        resolve(result);
      }
      function onKeep() { done(null); }
      async function submit(event) {
        event.preventDefault();
        yes.disabled = true;
        hideError(errorBox);
        try {
          const answer = await post("/api/v1/appointments/" + encodeURIComponent(a.appointment_id) + "/cancel", {}, { idempotencyKey: key });
          done(answer || { status: "cancelled" });
        } catch (err) {
          showError(errorBox, err);
          yes.disabled = err instanceof window.App.ApiError; // a refusal stands; a network failure may be retried
        }
      }
      form.addEventListener("submit", submit);
      keep.addEventListener("click", onKeep);
      dialog.addEventListener("cancel", onKeep);
      dialog.showModal();
    });
  }

  window.Bookings = { enrich, card, confirmCancel, cancellable, ACTIVE };
})();
