// The playground: one message to one or two deployed models, answers streamed as they are
// generated (server-sent events from tunelab's OpenAI-compatible endpoint), each side keeping
// its own conversation. Model output is text: it is never inserted as HTML.
"use strict";

(function () {
  const form = document.getElementById("playground");
  if (!form) return;
  const status = document.querySelector("[data-testid=playground-status]");
  const panes = {
    left: { el: form.querySelector("[data-pane=left]"), history: [] },
    right: { el: form.querySelector("[data-pane=right]"), history: [] },
  };
  let lastMessage = "";
  // The page's words, in its language (data- attributes of the form).
  const words = form.dataset;

  function say(text) {
    if (status) status.textContent = text;
  }

  function turn(pane, role, text) {
    const div = document.createElement("div");
    div.className = "turn " + role;
    const who = document.createElement("span");
    who.className = "muted small";
    who.textContent = role === "user" ? words.you : words.model;
    const body = document.createElement("p");
    body.className = "pre";
    body.textContent = text;
    div.append(who, body);
    pane.el.querySelector(".turns").appendChild(div);
    return body;
  }

  function titles() {
    for (const side of ["left", "right"]) {
      const model = form.elements[side].value;
      panes[side].el.hidden = !model;
      panes[side].el.querySelector(".pane-title").textContent = model;
    }
  }

  async function ask(side, message) {
    const pane = panes[side];
    const model = form.elements[side].value;
    if (!model) return;
    turn(pane, "user", message);
    pane.history.push({ role: "user", content: message });
    const out = turn(pane, "assistant", "");
    out.dataset.testid = "answer";
    const system = form.elements.system.value.trim();
    const messages = (system ? [{ role: "system", content: system }] : []).concat(pane.history);
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": form.dataset.csrf },
      body: JSON.stringify({
        model,
        messages,
        stream: true,
        max_tokens: Number(form.elements.max_tokens.value) || 256,
        temperature: Number(form.elements.temperature.value) || 0,
      }),
    });
    if (!response.ok || !response.body) {
      const problem = await response.json().catch(() => ({}));
      out.textContent = "Error: " + ((problem.error && problem.error.message) || problem.detail || response.statusText);
      pane.history.pop();
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: ?/, "").trim();
        if (!data || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) out.textContent += delta.content;
      }
    }
    out.dataset.done = "true";
    pane.history.push({ role: "assistant", content: out.textContent });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = form.elements.message.value.trim();
    if (!message) return;
    lastMessage = message;
    form.elements.message.value = "";
    say(words.answering);
    await Promise.all([ask("left", message), ask("right", message)]);
    say("");
  });
  form.elements.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  form.addEventListener("change", (event) => {
    if (event.target.name === "left" || event.target.name === "right") titles();
  });
  form.querySelector("[data-action=clear]").addEventListener("click", () => {
    for (const pane of Object.values(panes)) {
      pane.history = [];
      pane.el.querySelector(".turns").textContent = "";
    }
  });
  const review = form.querySelector("[data-action=review]");
  if (review) {
    review.addEventListener("click", async () => {
      if (!lastMessage) return say(words.sendFirst);
      const campaign = form.elements.campaign.value;
      const response = await fetch(`/api/v1/review-campaigns/${campaign}/prompts`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": form.dataset.csrf },
        body: JSON.stringify({ prompts: [lastMessage] }),
      });
      say(response.ok ? words.sentToReview : words.notSentToReview);
    });
  }
  titles();
})();
