/* Log in with mobile or ID number (patients) or a staff username; then go where the role works. */
(function () {
  "use strict";
  const { t, post, setSession, showError, hideError, HOME_OF_ROLE, whoami, localMessage, safeNext } = window.App;
  const form = document.getElementById("login-form");
  const button = document.getElementById("login-submit");
  const errorBox = document.getElementById("login-error");

  function nextPage(role) {
    const next = safeNext(new URLSearchParams(location.search).get("next"));
    if (next && !next.startsWith("/login")) return next;
    return HOME_OF_ROLE[role] || "/";
  }

  const reg = document.getElementById("to-register");
  const nextParam = new URLSearchParams(location.search).get("next");
  if (nextParam) reg.href = "/register?next=" + encodeURIComponent(nextParam);

  whoami().then((me) => { if (me) location.replace(nextPage(me.role)); });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(errorBox);
    const username = form.username.value.trim();
    const password = form.password.value;
    if (!username || !password) { showError(errorBox, t("common.login_needed")); return; }
    button.disabled = true;
    button.textContent = t("login.busy");
    try {
      const answer = await post("/api/v1/auth/login", { username: username, password: password });
      setSession(answer);
      location.assign(nextPage(answer.role));
    } catch (err) {
      // A refused login says why (wrong password, too many attempts); not "please log in".
      showError(errorBox, err.status === 401 ? localMessage(err.message) || t("common.error") : err);
      button.disabled = false;
      button.textContent = t("login.submit");
      form.password.select();
    }
  });
})();
