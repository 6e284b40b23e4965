// Progress for the data step: the upload's bytes as they are sent, then the server's
// validation progress while an import runs. Without this script the forms still work.
"use strict";

// The words come from the page (data-say-* attributes, in the reader's language, with {name}
// placeholders); English when a page has none.
function say(el, key, fallback, values) {
  let text = (el && el.dataset["say" + key]) || fallback;
  for (const [name, value] of Object.entries(values || {})) {
    text = text.split("{" + name + "}").join(value);
  }
  return text;
}

function showError(box, body, form) {
  box.textContent = "";
  const p = document.createElement("p");
  // The server's message is in the page's language; detail is the English one.
  p.textContent = (body && (body.message || body.detail)) || say(form, "Failed", "The upload failed.");
  box.appendChild(p);
  if (body && Array.isArray(body.errors)) {
    const list = document.createElement("ul");
    for (const e of body.errors.slice(0, 20)) {
      const li = document.createElement("li");
      li.textContent = e.line
        ? say(form, "Line", "line {line}: {message}", { line: e.line, message: e.message })
        : e.message;
      list.appendChild(li);
    }
    box.appendChild(list);
  }
  box.hidden = false;
}

function megabytes(n) {
  return (n / 1e6).toFixed(1) + " MB";
}

function enhanceUploadForm(form) {
  const bar = form.querySelector(".upload-progress");
  const status = form.querySelector(".upload-status");
  const errorBox = document.querySelector("[data-testid=upload-error-js]");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.api);
    xhr.setRequestHeader("X-CSRF-Token", data.get("csrf_token") || "");
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false;
    status.hidden = false;
    errorBox.hidden = true;
    form.querySelector("button[type=submit]").disabled = true;
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) {
        bar.value = Math.round((e.loaded / e.total) * 100);
        status.textContent = say(form, "Uploading", "Uploading: {done} of {total}", {
          done: megabytes(e.loaded),
          total: megabytes(e.total),
        });
      }
    });
    xhr.upload.addEventListener("load", () => {
      status.textContent = say(form, "Received", "Received; reading the first rows…");
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (err) {
        body = null;
      }
      if (xhr.status === 201 && body && body.id) {
        window.location.assign("/uploads/" + body.id);
        return;
      }
      form.querySelector("button[type=submit]").disabled = false;
      bar.hidden = true;
      status.hidden = true;
      showError(errorBox, body, form);
    });
    xhr.addEventListener("error", () => {
      form.querySelector("button[type=submit]").disabled = false;
      const message = say(form, "Connection", "The connection failed during the upload: try again.");
      showError(errorBox, { detail: message }, form);
    });
    xhr.send(data);
  });
}

function watchImport(form) {
  const bar = form.querySelector(".import-progress");
  const status = form.querySelector(".import-status");
  form.addEventListener("submit", () => {
    // The form submits normally; meanwhile the upload's progress is polled and shown.
    bar.hidden = false;
    status.hidden = false;
    status.textContent = say(form, "Validating", "Validating…");
    form.querySelector("button[type=submit]").disabled = true;
    const poll = () => {
      fetch("/api/v1/uploads/" + form.dataset.uploadId, { headers: { Accept: "application/json" } })
        .then((r) => (r.ok ? r.json() : null))
        .then((u) => {
          if (u && u.size_bytes) {
            const share = Math.min(1, u.progress_bytes / u.size_bytes);
            bar.value = Math.round(share * 100);
            status.textContent = say(form, "Progress", "Validating: {done} of {total}", {
              done: megabytes(u.progress_bytes),
              total: megabytes(u.size_bytes),
            });
          }
        })
        .catch(() => {})
        .finally(() => window.setTimeout(poll, 500));
    };
    window.setTimeout(poll, 300);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const upload = document.getElementById("upload-form");
  if (upload && upload.dataset.api) enhanceUploadForm(upload);
  const importForm = document.getElementById("import-form");
  if (importForm) watchImport(importForm);
});
