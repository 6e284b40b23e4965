// The review page: every choice saved as it is made (an idempotent PUT, retried after a
// network error), and a keyboard shortcut for every choice and for moving between items.
// Without this script the page still works: its form saves and moves on.
"use strict";

(function () {
  const form = document.getElementById("review-form");
  if (!form) return;
  const open = form.dataset.open === "true";
  const stateBox = document.querySelector("[data-testid=save-state]");
  const rows = Array.from(form.querySelectorAll(".score-row"));
  const comment = form.querySelector("textarea[name=comment]");
  let current = Math.max(0, rows.findIndex((row) => !row.querySelector("input:checked")));
  let inFlight = null; // the running save, if any
  let again = false; // something changed while it ran
  let commentTimer = null;

  // The page's words, in its language (data- attributes of the form).
  const words = form.dataset;
  function fill(template, name, value) {
    return (template || "").replace("{" + name + "}", value);
  }

  function show(text, kind) {
    if (!stateBox) return;
    stateBox.textContent = text;
    stateBox.dataset.state = kind;
  }

  function body() {
    const checked = form.querySelector("input[name=choice]:checked");
    const scores = {};
    for (const input of form.querySelectorAll("input[data-side]:checked")) {
      const side = input.dataset.side;
      (scores[side] = scores[side] || {})[input.dataset.criterion] = Number(input.value);
    }
    return { choice: checked ? checked.value : null, scores, comment: comment ? comment.value : "" };
  }

  async function put(payload) {
    // Retries are safe: the server keeps one rating per item and reviewer.
    const waits = [0, 500, 1000, 2000, 4000];
    let last = null;
    for (const wait of waits) {
      if (wait) {
        show(words.retrying, "retrying");
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
      try {
        const response = await fetch(form.dataset.api, {
          method: "PUT",
          headers: { "content-type": "application/json", "x-csrf-token": form.dataset.csrf },
          body: JSON.stringify(payload),
          credentials: "same-origin",
        });
        if (response.ok) {
          const saved = await response.json();
          const rated = document.querySelector("[data-testid=rated]");
          if (rated) rated.textContent = fill(words.graded, "n", saved.rated);
          show(words.saved, "saved");
          return true;
        }
        if (response.status < 500) {
          const problem = await response.json().catch(() => ({}));
          show(fill(words.notSaved, "reason", problem.message || problem.detail || response.statusText), "error");
          return false;
        }
        last = response.statusText;
      } catch (error) {
        last = error;
      }
    }
    show(fill(words.unreachable, "error", last), "error");
    return false;
  }

  function save() {
    if (!open) return Promise.resolve(true);
    if (inFlight) {
      again = true;
      return inFlight;
    }
    show(words.saving, "saving");
    inFlight = (async () => {
      let ok = true;
      do {
        again = false;
        ok = await put(body());
      } while (again);
      inFlight = null;
      return ok;
    })();
    return inFlight;
  }

  async function flush() {
    if (commentTimer) {
      clearTimeout(commentTimer);
      commentTimer = null;
      return save();
    }
    return inFlight || true;
  }

  function highlight(index) {
    if (!rows.length) return;
    current = (index + rows.length) % rows.length;
    rows.forEach((row, i) => row.classList.toggle("current", i === current));
  }

  function pick(name, value) {
    const input = form.querySelector(`input[name="${name}"][value="${value}"]`);
    if (!input || input.disabled) return false;
    input.checked = true;
    save();
    return true;
  }

  async function go(url) {
    if (!url) return;
    await flush();
    window.location.href = url;
  }

  form.addEventListener("change", (event) => {
    if (event.target.name === "comment") return;
    const row = event.target.closest(".score-row");
    if (row) highlight(rows.indexOf(row));
    save();
  });
  if (comment) {
    comment.addEventListener("input", () => {
      clearTimeout(commentTimer);
      commentTimer = setTimeout(() => {
        commentTimer = null;
        save();
      }, 600);
    });
  }
  // The buttons still submit the form (the server saves the same rating again, harmlessly),
  // after any save in progress.
  form.addEventListener("submit", async (event) => {
    if (form.dataset.submitting) return;
    event.preventDefault();
    await flush();
    form.dataset.submitting = "1";
    const button = event.submitter;
    if (button && button.name) {
      const hidden = document.createElement("input");
      hidden.type = "hidden";
      hidden.name = button.name;
      hidden.value = button.value;
      form.appendChild(hidden);
    }
    form.submit();
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    const typing =
      target instanceof HTMLTextAreaElement ||
      (target instanceof HTMLInputElement && target.type !== "radio");
    if (typing) {
      if (event.key === "Escape") target.blur();
      return;
    }
    const key = event.key;
    let handled = true;
    if (key === "ArrowLeft") handled = pick("choice", "left");
    else if (key === "ArrowRight") handled = pick("choice", "right");
    else if (key === "ArrowDown" || key === "=") handled = pick("choice", "tie");
    else if (key === "x" || key === "X") handled = pick("choice", "both_bad");
    else if (/^[1-5]$/.test(key) && rows.length) {
      const row = rows[current];
      const radio = row.querySelector(`input[value="${key}"]`);
      if (radio && !radio.disabled) {
        radio.checked = true;
        save();
        highlight(current + 1);
      }
    } else if (key === "j") highlight(current + 1);
    else if (key === "k") highlight(current - 1);
    else if (key === "n" || key === "Enter") go(form.dataset.next);
    else if (key === "p") go(form.dataset.previous);
    else if (key === "c" && comment && !comment.disabled) comment.focus();
    else handled = false;
    if (handled) event.preventDefault();
  });

  highlight(current);
  // Keys pressed before this line ran were not seen; tests (and styles) can wait for this.
  form.dataset.ready = "true";
})();
