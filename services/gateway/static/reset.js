/* Forgotten password: the registered mobile proves the account (an SMS code), then a new password. */
(function () {
  "use strict";
  const { t, post, showError, hideError, smsCodeButton } = window.App;
  const form = document.getElementById("reset-form");
  const errorBox = document.getElementById("reset-error");
  const done = document.getElementById("reset-done");
  const button = document.getElementById("reset-submit");
  smsCodeButton(document.getElementById("reset-send-code"), form.phone, "reset_password", errorBox);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(errorBox);
    done.hidden = true;
    if (form.password.value.length < 8) { showError(errorBox, t("register.bad_password")); return; }
    button.disabled = true;
    try {
      await post("/api/v1/auth/password-reset", {
        id_number: form.id_number.value.trim().toUpperCase(), phone: form.phone.value.trim(),
        sms_code: form.sms_code.value.trim(), password: form.password.value,
      });
      done.textContent = t("reset.done");
      done.hidden = false;
      setTimeout(() => location.assign("/login"), 1500);
    } catch (err) {
      showError(errorBox, err);
      button.disabled = false;
    }
  });
})();
