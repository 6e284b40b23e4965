// Progress for the data step: the upload's bytes as they are sent, then the server's
// validation progress while an import runs. Without this script the forms still work.
"use strict";

function showError(box, body) {
  box.textContent = "";
  const p = document.createElement("p");
  p.textContent = (body && body.detail) || "The upload failed.";
  box.appendChild(p);
  if (body && Array.isArray(body.errors)) {
    const list = document.createElement("ul");
    for (const e of body.errors.slice(0, 20)) {
      const li = document.createElement("li");
      li.textContent = (e.line ? "line " + e.line + ": " : "") + e.message;
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
        status.textContent = "Uploading: " + megabytes(e.loaded) + " of " + megabytes(e.total);
      }
    });
    xhr.upload.addEventListener("load", () => {
      status.textContent = "Received; reading the first rows…";
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
      showError(errorBox, body);
    });
    xhr.addEventListener("error", () => {
      form.querySelector("button[type=submit]").disabled = false;
      showError(errorBox, { detail: "The connection failed during the upload: try again." });
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
    status.textContent = "Validating…";
    form.querySelector("button[type=submit]").disabled = true;
    const poll = () => {
      fetch("/api/v1/uploads/" + form.dataset.uploadId, { headers: { Accept: "application/json" } })
        .then((r) => (r.ok ? r.json() : null))
        .then((u) => {
          if (u && u.size_bytes) {
            const share = Math.min(1, u.progress_bytes / u.size_bytes);
            bar.value = Math.round(share * 100);
            status.textContent =
              "Validating: " + megabytes(u.progress_bytes) + " of " + megabytes(u.size_bytes);
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
