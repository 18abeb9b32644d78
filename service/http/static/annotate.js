"use strict";
// One task at a time: show it, take the answer from buttons or keys, submit, fetch the next.
(() => {
  const { call, element, login } = window.arbiter;
  const $ = (id) => document.getElementById(id);
  const STRENGTHS = ["negligibly_better", "slightly_better", "better", "significantly_better"];
  let task = null;
  let choice = null;
  let shownAt = 0;
  let busy = false;

  function strength() {
    const picked = document.querySelector('input[name="strength"]:checked');
    return picked ? picked.value : null;
  }

  function ranks() {
    return [...document.querySelectorAll("select.rank")].map((s) => Number(s.value));
  }

  function ready() {
    if (!task) return false;
    if (task.kind === "ranking") return ranks().every((r) => r >= 1);
    return choice === "tie" || (choice !== null && strength() !== null);
  }

  function refresh() {
    for (const button of document.querySelectorAll("#pair-choice button")) {
      button.setAttribute("aria-pressed", String(button.dataset.choice === choice));
    }
    $("strength").disabled = choice === "tie";
    document.querySelectorAll(".response").forEach((card) => {
      card.classList.toggle("chosen", choice === card.dataset.label);
    });
    $("submit").disabled = !ready() || busy;
  }

  async function progress() {
    const me = await call("GET", "/v1/annotation/me");
    $("who").textContent = `${me.annotator} (${me.role})`;
    $("progress").textContent = `Done ${me.submitted} · skipped ${me.skipped} · left for you ${me.available + me.active}`;
    return me;
  }

  function show(view) {
    task = view;
    choice = null;
    shownAt = performance.now();
    $("prompt").innerHTML = view.prompt_html; // rendered by the server with every raw HTML tag escaped
    const cards = $("responses");
    cards.replaceChildren();
    cards.classList.toggle("many", view.responses.length > 2);
    for (const response of view.responses) {
      const card = element("article", { class: "response", "data-label": response.label });
      const heading = element("h2", { class: "label" }, `Response ${response.label}`);
      const body = element("div", { class: "body" });
      body.innerHTML = response.html;
      card.append(heading, body);
      if (view.kind === "ranking") {
        const select = element("select", { class: "rank", "aria-label": `Rank of response ${response.label}` });
        select.append(element("option", { value: "0" }, "rank…"));
        view.responses.forEach((_, i) => select.append(element("option", { value: String(i + 1) }, String(i + 1))));
        select.addEventListener("change", refresh);
        card.append(select);
      }
      cards.append(card);
    }
    $("pair-choice").hidden = view.kind !== "pair";
    document.querySelectorAll('input[name="strength"]').forEach((r) => (r.checked = false));
    $("safety").checked = false;
    $("rationale").value = "";
    if (document.activeElement instanceof HTMLElement) document.activeElement.blur(); // keys act on the new task
    $("status").textContent = "";
    $("work").hidden = false;
    $("done").hidden = true;
    refresh();
  }

  // The progress line changes after the next task is on screen, so it can be waited for.
  async function next() {
    const view = await call("POST", "/v1/annotation/next");
    if (view === null) {
      task = null;
      $("work").hidden = true;
      $("done").hidden = false;
    } else {
      show(view);
    }
    await progress();
  }

  async function act(work, message) {
    if (busy) return;
    busy = true;
    refresh();
    try {
      try {
        await work();
      } catch (error) {
        $("status").textContent = `Not saved: ${error.message}`;
        return;
      }
      try {
        await next();
        $("status").textContent = message;
      } catch (error) {
        $("status").textContent = `${message} The next task did not load: ${error.message}`;
      }
    } finally {
      busy = false;
      refresh();
    }
  }

  function submit() {
    if (!ready() || busy) return;
    const answer = {
      strength: task.kind === "pair" && choice === "tie" ? null : strength(),
      rationale: $("rationale").value.trim() || null,
      safety_flag: $("safety").checked,
      time_spent_ms: Math.round(performance.now() - shownAt),
    };
    if (task.kind === "pair") answer.choice = choice;
    else answer.ranking = ranks();
    act(() => call("POST", `/v1/annotation/tasks/${task.task_id}/annotations`, answer), "Saved.");
  }

  function skip() {
    if (task) act(() => call("POST", `/v1/annotation/tasks/${task.task_id}/skip`), "Skipped.");
  }

  function choose(value) {
    if (!task || task.kind !== "pair") return;
    choice = value;
    refresh();
  }

  function pickStrength(index) {
    const radio = document.querySelector(`input[name="strength"][value="${STRENGTHS[index]}"]`);
    if (radio && !$("strength").disabled) {
      radio.checked = true;
      refresh();
    }
  }

  document.addEventListener("keydown", (event) => {
    if ($("work").hidden) return;
    const typing = event.target.matches("textarea, input[type=password], select");
    if (event.key === "Enter" && (!typing || event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
      return;
    }
    if (typing || event.altKey || event.ctrlKey || event.metaKey) return;
    const key = event.key.toLowerCase();
    const actions = {
      a: () => choose("A"),
      b: () => choose("B"),
      t: () => choose("tie"),
      s: skip,
      f: () => {
        $("safety").checked = !$("safety").checked;
      },
      1: () => pickStrength(0),
      2: () => pickStrength(1),
      3: () => pickStrength(2),
      4: () => pickStrength(3),
    };
    if (actions[key]) {
      event.preventDefault();
      actions[key]();
    }
  });
  document.querySelectorAll("#pair-choice button").forEach((b) => b.addEventListener("click", () => choose(b.dataset.choice)));
  document.querySelectorAll('input[name="strength"]').forEach((r) => r.addEventListener("change", refresh));
  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", skip);
  $("again").addEventListener("click", () => next());

  login(progress, () => next().catch((error) => ($("status").textContent = error.message)));
})();
