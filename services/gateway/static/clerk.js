/* The booking window (预约挂号服务窗口): check a patient in with booking code + ID number. */
(function () {
  "use strict";
  const { t, el, post, requireRole, staffHello, showError, hideError } = window.App;
  const form = document.getElementById("checkin-form");
  const button = document.getElementById("checkin-submit");
  const errorBox = document.getElementById("checkin-error");
  const result = document.getElementById("checkin-result");
  const recent = document.getElementById("recent");
  const RECENT_KEY = "clerk:recent";

  function drawRecent() {
    const items = JSON.parse(sessionStorage.getItem(RECENT_KEY) || "[]");
    recent.replaceChildren(...items.map((r) => el("li", null, el("span", { class: "code" }, r.code), " · " + r.at + " · " +
      (Number(r.fee_taken) > 0 ? t("clerk.fee_taken", { fee: Number(r.fee_taken).toFixed(2) }) : t("clerk.fee_paid")))));
  }

  form.code.addEventListener("input", () => { form.code.value = form.code.value.toUpperCase().replace(/\s+/g, ""); });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(errorBox);
    const code = form.code.value.trim().toUpperCase();
    const idNumber = form.id_number.value.trim().toUpperCase();
    if (!code || !idNumber) { showError(errorBox, t("clerk.lead")); return; }
    button.disabled = true;
    button.textContent = t("clerk.busy");
    try {
      const answer = await post("/api/v1/appointments/" + encodeURIComponent(code) + "/check-in", { id_number: idNumber });
      const paid = !(Number(answer.fee_taken) > 0);
      result.className = "result card ok";
      result.replaceChildren(
        el("div", { class: "big", id: "checkin-done" }, "✓ " + t("clerk.done")),
        el("div", { class: "code" }, code),
        el("div", { class: "fee-line", id: "fee-taken" }, paid ? t("clerk.fee_paid") : t("clerk.fee_taken", { fee: Number(answer.fee_taken).toFixed(2) })),
        el("p", { class: "muted small" }, t("status." + (answer.status || "checked_in"))));
      result.hidden = false;
      const items = JSON.parse(sessionStorage.getItem(RECENT_KEY) || "[]");
      items.unshift({ code: code, fee_taken: answer.fee_taken, at: new Date().toTimeString().slice(0, 5) });
      sessionStorage.setItem(RECENT_KEY, JSON.stringify(items.slice(0, 20)));
      drawRecent();
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

  requireRole(["clerk", "hospital_admin", "platform_admin"]).then((me) => { staffHello(me); drawRecent(); form.code.focus(); });
})();
