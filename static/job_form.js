// The job form's estimate (redrawn as the form changes) never shrinks while the page is open.
// The form ends the page: a shorter estimate shortened the page, the browser scrolled it, and
// the "Start training" button moved from under the pointer between press and release (the
// press takes the focus from the edited field, whose change redraws the estimate), so that
// first click was lost.
document.addEventListener("htmx:beforeSwap", (event) => {
  const target = event.detail.target;
  if (target && target.id === "estimate") {
    target.style.minHeight = `${target.offsetHeight}px`;
  }
});
