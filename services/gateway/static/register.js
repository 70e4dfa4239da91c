/* Real-name registration: checked here first (ID check digit, mobile), then by the API; then log in. */
(function () {
  "use strict";
  const { LANG, t, post, setSession, showError, hideError, safeNext, smsCodeButton } = window.App;
  const form = document.getElementById("register-form");
  const button = document.getElementById("register-submit");
  const errorBox = document.getElementById("register-error");
  const WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const CHECK = "10X98765432";

  smsCodeButton(document.getElementById("reg-send-code"), form.phone, "register", errorBox);

  function idValid(id) {
    if (!/^\d{17}[\dX]$/.test(id)) return false;
    const sum = WEIGHTS.reduce((acc, w, i) => acc + w * Number(id[i]), 0);
    return CHECK[sum % 11] === id[17];
  }

  function invalid(input, message) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
    showError(errorBox, message);
    return false;
  }

  function check() {
    form.querySelectorAll("input").forEach((i) => i.removeAttribute("aria-invalid"));
    if (!form.name.value.trim()) return invalid(form.name, t("register.bad_name"));
    if (!idValid(form.id_number.value.trim().toUpperCase())) return invalid(form.id_number, t("register.bad_id"));
    if (!/^1[3-9]\d{9}$/.test(form.phone.value.trim())) return invalid(form.phone, t("register.bad_phone"));
    if (!/^\d{6}$/.test(form.sms_code.value.trim())) return invalid(form.sms_code, t("sms_code.bad"));
    if (form.password.value.length < 8) return invalid(form.password, t("register.bad_password"));
    if (form.password.value !== form.password2.value) return invalid(form.password2, t("register.mismatch"));
    return true;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(errorBox);
    if (!check()) return;
    const body = {
      name: form.name.value.trim(), id_number: form.id_number.value.trim().toUpperCase(),
      phone: form.phone.value.trim(), sms_code: form.sms_code.value.trim(), password: form.password.value,
      locale: LANG === "en" ? "en" : "zh",
    };
    button.disabled = true;
    button.textContent = t("register.busy");
    try {
      // A new registration answers with a login session; an existing one says "please log in".
      let answer = await post("/api/v1/patients", body);
      if (!answer.csrf_token) answer = await post("/api/v1/auth/login", { username: body.phone, password: body.password });
      setSession(answer);
      location.assign(safeNext(new URLSearchParams(location.search).get("next")) || "/me");
    } catch (err) {
      const field = err.field && form.elements[err.field === "id_number" ? "id_number" : err.field];
      if (field && field.setAttribute) field.setAttribute("aria-invalid", "true");
      showError(errorBox, err);
      button.disabled = false;
      button.textContent = t("register.submit");
    }
  });
})();
