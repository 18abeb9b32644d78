"use strict";
// What both pages share: the key kept in this browser, and calls to the API that turn error bodies into messages.
window.arbiter = (() => {
  const STORAGE = "arbiter.key";
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }
  async function call(method, path, body) {
    const headers = { Authorization: `Bearer ${localStorage.getItem(STORAGE) || ""}` };
    // The server takes state-changing requests only as JSON (what a cross-site form cannot send), bodiless ones too.
    if (method !== "GET") headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, error.code || "http_error", error.message || response.statusText);
    }
    return data;
  }
  function element(tag, attributes = {}, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // Shows the key form until a key works; `onReady` gets what `check` returned for it.
  function login(check, onReady) {
    const form = document.getElementById("login");
    const input = document.getElementById("key");
    const problem = document.getElementById("login-error");
    const attempt = async () => {
      try {
        const result = await check();
        form.hidden = true;
        input.blur(); // the page's keyboard shortcuts must not go to the key field
        onReady(result);
      } catch (error) {
        form.hidden = false;
        problem.textContent = localStorage.getItem(STORAGE) ? error.message : "";
        input.focus();
      }
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      localStorage.setItem(STORAGE, input.value.trim());
      input.value = "";
      attempt();
    });
    document.getElementById("logout").addEventListener("click", () => {
      localStorage.removeItem(STORAGE);
      location.reload();
    });
    attempt();
  }
  return { ApiError, call, element, login };
})();
