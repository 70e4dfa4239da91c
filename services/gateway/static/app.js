/* Shared helpers of every page: texts, the JSON API (CSRF, idempotency keys), dates in Beijing time,
   DOM building without innerHTML, the navigation for the signed-in role. Exposed as window.App. */
(function () {
  "use strict";

  const TEXTS = JSON.parse(document.getElementById("i18n").textContent);
  const LANG = document.body.dataset.lang || "zh";
  const TZ = "Asia/Shanghai";

  function t(key, values) {
    let text = Object.prototype.hasOwnProperty.call(TEXTS, key) ? TEXTS[key] : key;
    if (values) text = text.replace(/\{(\w+)\}/g, (m, k) => (values[k] !== undefined && values[k] !== null ? String(values[k]) : m));
    return text;
  }

  /* The API answers "中文 / English"; show the visitor's half. */
  function localMessage(text) {
    if (typeof text !== "string") return "";
    const parts = text.split(" / ");
    if (parts.length === 2) return LANG === "zh" ? parts[0] : parts[1];
    return text;
  }

  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      const err = (body && body.error) || {};
      super(err.message || "HTTP " + status);
      this.status = status;
      this.code = err.code || "http_" + status;
      this.field = err.field || null;
      this.retryAfter = retryAfter || null;
    }
  }

  function errorText(err) {
    if (err instanceof ApiError) {
      if (err.status === 401) return t("common.login_needed");
      return localMessage(err.message) || t("common.error");
    }
    return t("common.network");
  }

  /* --- who is signed in --------------------------------------------------------------------- */
  let session = null;        // the answer of /api/v1/me (or of the login)
  let sessionLoaded = null;  // a promise while it loads

  function whoami(force) {
    if (sessionLoaded && !force) return sessionLoaded;
    sessionLoaded = fetch("/api/v1/me", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : null))
      .catch(() => null)
      .then((me) => { session = me; return me; });
    return sessionLoaded;
  }

  function setSession(answer) {
    session = answer;
    sessionLoaded = Promise.resolve(answer);
  }

  /* Only a path on this site. Browsers drop tab, CR and LF from a URL and read "\\" as "/", so
     "/\t/host" is "//host": refuse any control character, space or backslash, then let the URL
     parser decide and keep the answer only if it stays on this origin. */
  function safeNext(next) {
    if (typeof next !== "string" || !next.startsWith("/") || /[\u0000-\u0020\u007f\\]/.test(next)) return null;
    let url;
    try { url = new URL(next, location.origin); } catch (_) { return null; }
    return url.origin === location.origin ? url.pathname + url.search + url.hash : null;
  }

  function loginUrl() {
    return "/login?next=" + encodeURIComponent(location.pathname + location.search + location.hash);
  }

  /* The page needs one of these roles: the signed-in principal, or a redirect to the login. */
  async function requireRole(roles) {
    const me = await whoami();
    if (!me) { location.assign(loginUrl()); return new Promise(() => {}); }
    if (roles && roles.indexOf(me.role) < 0) {
      const main = document.getElementById("main");
      main.replaceChildren(el("div", { class: "banner banner-danger", role: "alert" }, t("common.forbidden")));
      return new Promise(() => {});
    }
    return me;
  }

  /* --- the JSON API ------------------------------------------------------------------------- */
  async function api(method, path, body, options) {
    const opts = options || {};
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") {
      const me = session || (await whoami());
      if (me && me.csrf_token) headers["X-CSRF-Token"] = me.csrf_token;
    }
    if (opts.idempotencyKey) headers["Idempotency-Key"] = opts.idempotencyKey;
    const response = await fetch(path, {
      method: method, headers: headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    let payload = null;
    try { payload = await response.json(); } catch (e) { payload = null; }
    if (!response.ok) throw new ApiError(response.status, payload, Number(response.headers.get("Retry-After")) || null);
    return payload;
  }
  const get = (path) => api("GET", path);
  const post = (path, body, options) => api("POST", path, body === undefined ? {} : body, options);

  /* A random id per user action (an idempotency key); crypto.randomUUID needs a secure context. */
  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  /* --- DOM ---------------------------------------------------------------------------------- */
  function el(tag, attrs) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = v;
        else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
        else if (k === "dataset") Object.assign(node.dataset, v);
        else node.setAttribute(k, v === true ? "" : v);
      }
    }
    for (let i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }
  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach((c) => append(node, c)); return; }
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function showError(node, err) {
    if (!node) return;
    node.textContent = typeof err === "string" ? err : errorText(err);
    node.hidden = false;
  }
  function hideError(node) { if (node) { node.hidden = true; node.textContent = ""; } }

  function loaded(node) { if (node) node.removeAttribute("aria-busy"); }

  let toastTimer = null;
  function toast(text) {
    const node = document.getElementById("toast");
    node.textContent = text;
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { node.hidden = true; }, 3200);
  }

  function facts(dl, pairs) {
    dl.replaceChildren();
    pairs.forEach(([label, value, cls]) => {
      if (value === null || value === undefined || value === "") return;
      dl.append(el("dt", null, label), el("dd", { class: cls || null }, value));
    });
  }

  /* --- dates (the hospitals' clock: Beijing time) -------------------------------------------- */
  const dayFmt = new Intl.DateTimeFormat("en-CA", { timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit" });
  function todayISO() { return dayFmt.format(new Date()); }
  function parseDay(iso) { const [y, m, d] = iso.split("-").map(Number); return new Date(Date.UTC(y, m - 1, d)); }
  function addDays(iso, n) { const d = parseDay(iso); d.setUTCDate(d.getUTCDate() + n); return d.toISOString().slice(0, 10); }
  function weekday(iso) { return t("weekday." + parseDay(iso).getUTCDay()); }
  function shortDay(iso) {
    const d = parseDay(iso);
    return LANG === "zh" ? (d.getUTCMonth() + 1) + "月" + d.getUTCDate() + "日"
      : d.toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
  }
  function longDay(iso) { return shortDay(iso) + " " + weekday(iso); }
  function dayLabel(iso) {
    const today = todayISO();
    if (iso === today) return t("common.today");
    if (iso === addDays(today, 1)) return t("common.tomorrow");
    return weekday(iso);
  }
  const momentFmt = new Intl.DateTimeFormat("zh-CN", { timeZone: TZ, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false });
  function moment(isoDateTime) {
    if (!isoDateTime) return "";
    const d = new Date(isoDateTime);
    if (isNaN(d)) return isoDateTime;
    const p = Object.fromEntries(momentFmt.formatToParts(d).map((x) => [x.type, x.value]));
    return p.month + "-" + p.day + " " + p.hour + ":" + p.minute;
  }
  function hm(value) { return value ? String(value).slice(0, 5) : ""; }
  function money(fee) {
    const n = Number(fee);
    return "¥" + (isNaN(n) ? fee : n.toFixed(2));
  }
  function periodText(p) { return t("period." + p); }
  function titleText(title) { return title ? t("title." + title) : ""; }
  function whenText(s) {
    return longDay(s.date) + " " + periodText(s.period) + (s.start ? " " + hm(s.start) + (s.end ? "–" + hm(s.end) : "") : "");
  }

  /* A booking code as it is read out: groups of four, each character in its own box. */
  function codeBoxes(code, withHints) {
    const wrap = el("div", { class: "code-big", "aria-label": code });
    const chars = String(code || "").toUpperCase().split("");
    for (let i = 0; i < chars.length; i += 4) {
      const group = el("div", { class: "group" });
      chars.slice(i, i + 4).forEach((c) => {
        const hint = withHints ? el("small", null, /[0-9]/.test(c) ? t("op.digit") : t("op.letter")) : null;
        group.append(el("span", { class: "code-char", "data-char": c }, el("b", null, c), hint));
      });
      wrap.append(group);
    }
    return wrap;
  }

  /* --- navigation --------------------------------------------------------------------------- */
  const NAV = {
    patient: [["/", "nav.home"], ["/me", "nav.me"]],
    operator: [["/operator", "nav.operator"]],
    clerk: [["/clerk", "nav.clerk"], ["/doctor", "nav.doctor"]],
    doctor: [["/doctor", "nav.doctor_mine"]],
    hospital_admin: [["/admin", "nav.admin"], ["/clerk", "nav.clerk"], ["/doctor", "nav.doctor"], ["/analyst", "nav.analyst"]],
    platform_admin: [["/admin", "nav.admin"], ["/analyst", "nav.analyst"], ["/ops", "nav.ops"]],
    analyst: [["/analyst", "nav.analyst"]],
  };
  const HOME_OF_ROLE = { patient: "/me", operator: "/operator", clerk: "/clerk", doctor: "/doctor", hospital_admin: "/admin",
    platform_admin: "/admin", analyst: "/analyst" };
  const STAFF_ROLES = ["operator", "clerk", "doctor", "hospital_admin", "platform_admin", "analyst"];

  async function logout() {
    try { await post("/api/v1/auth/logout"); } catch (e) { /* signed out either way */ }
    setSession(null);
    location.assign("/");
  }

  /* Staff get an account menu (their name): change the password, log out. Patients keep the plain links. */
  function renderNav(me) {
    const nav = document.getElementById("nav");
    if (!nav || !me) return;
    const links = (NAV[me.role] || []).map(([href, key]) =>
      el("a", { href: href, class: "nav-link" + (location.pathname === href ? " active" : ""), "data-nav": href }, t(key)));
    if (STAFF_ROLES.indexOf(me.role) >= 0) {
      const menu = el("details", { class: "account-menu", id: "account-menu" },
        el("summary", { class: "nav-link", id: "nav-user" }, me.name || me.subject),
        el("div", { class: "account-items" },
          el("button", { type: "button", id: "change-password", onclick: () => { menu.open = false; passwordDialog().showModal(); } },
            t("nav.password")),
          el("button", { type: "button", id: "logout", onclick: logout }, t("nav.logout"))));
      document.addEventListener("click", (e) => { if (!menu.contains(e.target)) menu.open = false; });
      links.push(menu);
    } else {
      if (me.name) links.push(el("span", { class: "nav-user", id: "nav-user" }, me.name));
      links.push(el("button", { type: "button", id: "logout", onclick: logout }, t("nav.logout")));
    }
    nav.replaceChildren(...links);
  }

  /* 修改密码: the old one and a new one twice; every page of the staff has it in the account menu. */
  let pwDialog = null;
  function passwordDialog() {
    if (pwDialog) { pwDialog.querySelector("form").reset(); hideError(pwDialog.querySelector(".form-error")); return pwDialog; }
    const field = (name, label, hint) => el("label", { class: "field" }, el("span", null, label),
      el("input", { type: "password", name: name, required: true, minlength: name === "old_password" ? null : "8", maxlength: "128",
        autocomplete: name === "old_password" ? "current-password" : "new-password" }), hint ? el("small", null, hint) : null);
    const errorBox = el("p", { class: "form-error", role: "alert", hidden: true });
    const form = el("form", { class: "dialog-body form", id: "password-form", novalidate: true },
      el("h2", { id: "password-title" }, t("nav.password")),
      field("old_password", t("password.old")), field("new_password", t("password.new"), t("register.hint.password")),
      field("new_password2", t("register.password2")), errorBox,
      el("div", { class: "dialog-actions" },
        el("button", { type: "button", class: "btn btn-ghost", onclick: () => pwDialog.close() }, t("common.cancel")),
        el("button", { type: "submit", class: "btn btn-primary", id: "password-submit" }, t("common.save"))));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      hideError(errorBox);
      const oldPw = form.old_password.value, newPw = form.new_password.value;
      if (newPw.length < 8) { showError(errorBox, t("register.bad_password")); return; }
      if (newPw !== form.new_password2.value) { showError(errorBox, t("register.mismatch")); return; }
      try {
        await post("/api/v1/auth/password", { old_password: oldPw, new_password: newPw });
        pwDialog.close();
        toast(t("password.done"));
      } catch (err) { showError(errorBox, err); }
    });
    pwDialog = el("dialog", { class: "dialog", id: "password-dialog", "aria-labelledby": "password-title" }, form);
    document.body.append(pwDialog);
    return pwDialog;
  }
  /* "获取验证码": asks for an SMS code to the phone in `phoneInput`, then counts down until another
     may be asked for (the server says how long: resend_after, or Retry-After on a 429). */
  function smsCodeButton(button, phoneInput, purpose, errorBox) {
    const label = button.textContent;
    let timer = null;
    function countdown(seconds) {
      clearInterval(timer);
      let left = Math.max(1, Math.ceil(seconds));
      button.disabled = true;
      button.textContent = t("sms_code.again", { s: left });
      timer = setInterval(() => {
        left -= 1;
        if (left > 0) { button.textContent = t("sms_code.again", { s: left }); return; }
        clearInterval(timer);
        button.disabled = false;
        button.textContent = label;
      }, 1000);
    }
    button.addEventListener("click", async () => {
      hideError(errorBox);
      const phone = phoneInput.value.trim();
      if (!/^1[3-9]\d{9}$/.test(phone)) {
        phoneInput.setAttribute("aria-invalid", "true");
        phoneInput.focus();
        showError(errorBox, t("register.bad_phone"));
        return;
      }
      phoneInput.removeAttribute("aria-invalid");
      button.disabled = true;
      try {
        const answer = await post("/api/v1/verification-codes", { phone: phone, purpose: purpose, locale: LANG });
        toast(t("sms_code.sent"));
        countdown(answer.resend_after || 60);
      } catch (err) {
        showError(errorBox, err);
        if (err.retryAfter) countdown(err.retryAfter); else button.disabled = false;
      }
    });
  }

  /* The hospital's name, never its code: /api/v1/me answers hospital_name; older gateways only the id. */
  let hospitalsLoaded = null;
  async function hospitalName(me) {
    if (!me || !me.hospital_id) return "";
    if (me.hospital_name) return me.hospital_name;
    hospitalsLoaded = hospitalsLoaded || get("/api/v1/hospitals").then((a) => a.hospitals || []).catch(() => []);
    const found = (await hospitalsLoaded).find((h) => h.hospital_id === me.hospital_id);
    return found ? found.name : "";
  }

  async function staffHello(me) {
    const node = document.getElementById("staff-hello");
    if (!node || !me) return;
    const name = await hospitalName(me);
    node.textContent = [me.name || me.subject, name].filter(Boolean).join(" · ");
  }

  /* Tables marked .table-reflow become one card per row on a phone: each cell carries its column's
     heading (data-label), whichever script drew the rows. */
  function labelCells(table) {
    const heads = Array.from(table.querySelectorAll("thead th"), (th) => th.textContent.trim());
    table.querySelectorAll("tbody tr").forEach((tr) => {
      Array.from(tr.children).forEach((td, i) => {
        if (td.colSpan > 1) td.dataset.label = "";
        else if (!td.hasAttribute("data-label")) td.dataset.label = heads[i] || "";
      });
    });
  }
  function watchTables() {
    const pending = new Set();
    let queued = false;
    new MutationObserver((records) => {
      records.forEach((r) => {
        const table = r.target.closest && r.target.closest("table.table-reflow");
        if (table) pending.add(table);
        r.addedNodes.forEach((n) => { if (n.querySelectorAll) n.querySelectorAll("table.table-reflow").forEach((x) => pending.add(x)); });
      });
      if (!queued && pending.size) {
        queued = true;
        queueMicrotask(() => { queued = false; pending.forEach(labelCells); pending.clear(); });
      }
    }).observe(document.body, { childList: true, subtree: true });
    document.querySelectorAll("table.table-reflow").forEach(labelCells);
  }

  window.App = {
    LANG, t, localMessage, ApiError, errorText, whoami, setSession, requireRole, loginUrl, api, get, post, uuid,
    el, $, $$, safeNext, showError, hideError, loaded, toast, facts, todayISO, addDays, weekday, shortDay, longDay, dayLabel,
    moment, hm, money, periodText, titleText, whenText, codeBoxes, HOME_OF_ROLE, staffHello, hospitalName, logout, smsCodeButton,
    passwordDialog, labelCells,
  };

  document.addEventListener("DOMContentLoaded", () => { watchTables(); whoami().then(renderNav); });
})();
