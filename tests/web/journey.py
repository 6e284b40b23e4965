"""What the browser journey needs besides the steps themselves: the page's words in the
journey's language (read from the same catalog the app uses), a screenshot of every step, the
time each step took, and a watch for English left in the headings of a Chinese page."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from app.core import i18n

# Words that read the same in Chinese pages: names, metrics, method names and symbols.
SAME_IN_CHINESE = {
    "tunelab",
    "API",
    "LoRA",
    "QLoRA",
    "DoRA",
    "ROUGE",
    "BLEU",
    "SmolLM",
    "Instruct",
    "smollm",
    "instruct",
    "base",
    "job",
    "English",
    "vLLM",
    "rsLoRA",
    "lora",
    "alpha",
    "dropout",
    "tuning",  # P-tuning
    "token",
    "Hugging",
    "Face",
    "gguf",
}
ENGLISH_WORD = re.compile(r"[A-Za-z]{3,}")
HEX_ID = re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f-]+)?\b")


def screenshot_root(tmp_path: Path) -> Path:
    """TUNELAB_SCREENSHOTS when set (CI keeps it as an artefact), else the test's tmp folder."""
    root = Path(os.environ.get("TUNELAB_SCREENSHOTS") or tmp_path / "screenshots")
    root.mkdir(parents=True, exist_ok=True)
    return root


# A label's own words, without the options of the field inside it.
LABELS_OWN_TEXT = """() => Array.from(document.querySelectorAll("main label")).map(label =>
  Array.from(label.childNodes).filter(n => n.nodeType === Node.TEXT_NODE)
    .map(n => n.textContent).join(" ").trim()).filter(t => t)"""


@dataclass
class Journey:
    """One language's walk through the product in one browser page."""

    page: Page
    locale: str  # "zh_CN" or "en"
    shots: Path
    own_words: set[str] = field(default_factory=set)  # names the user typed, shown as typed
    english: list[str] = field(default_factory=list)  # "page: heading" left in English
    english_elsewhere: list[str] = field(default_factory=list)  # table heads, buttons, …
    timings: list[tuple[str, float]] = field(default_factory=list)
    _count: int = 0
    _started: float = field(default_factory=time.monotonic)

    @property
    def zh(self) -> bool:
        return self.locale == "zh_CN"

    def t(self, message: str) -> str:
        """``message`` as the page shows it in this journey's language."""
        if not self.zh:
            return message
        catalog = i18n.translations(self.locale)
        if "%" in message:  # a {% trans %} block's message id doubles its "%"
            return catalog.gettext(message.replace("%", "%%")).replace("%%", "%")
        return catalog.gettext(message)

    def pick(self, zh: str, en: str) -> str:
        """What the user types: Chinese in the Chinese journey, English in the English one."""
        return zh if self.zh else en

    def label(self, message: str, **kwargs: object) -> Locator:
        return self.page.get_by_label(self.t(message), **kwargs)  # type: ignore[arg-type]

    def button(self, message: str, exact: bool = True) -> Locator:
        return self.page.get_by_role("button", name=self.t(message), exact=exact)

    def step(self, name: str) -> None:
        """The step is done: keep a screenshot and its time, and check the page's language."""
        self._count += 1
        now = time.monotonic()
        self.timings.append((name, now - self._started))
        self._started = now
        self.screenshot(self.shots / f"{self._count:02d}-{name}.png")
        self.check_language()

    def screenshot(self, path: Path) -> None:
        """The whole page. Playwright's ``full_page`` is not used: in headless Chromium, after
        one on a long form, the next click on that form did not submit it. The window is made
        as tall as the page for the picture instead, then put back."""
        size = self.page.viewport_size or {"width": 1280, "height": 720}
        height = self.page.evaluate("document.documentElement.scrollHeight")
        self.page.set_viewport_size({"width": size["width"], "height": max(height, 200)})
        try:
            self.page.screenshot(path=str(path))
        finally:
            self.page.set_viewport_size(size)

    def check_language(self) -> None:
        """``<html lang>`` says the journey's language; in Chinese, the headings are Chinese."""
        expect(self.page.locator("html")).to_have_attribute("lang", "zh-CN" if self.zh else "en")
        if not self.zh:
            return
        path = self.page.url.split("://", 1)[-1].split("/", 1)[-1]
        # The page's and its sections' titles must be Chinese; other labels are listed in
        # english.txt beside the screenshots, for a person to look at.
        texts = {
            "headings": self.page.locator("h1, h2, legend").all_inner_texts(),
            "elsewhere": self.page.locator("h3, th, button, summary").all_inner_texts()
            + self.page.evaluate(LABELS_OWN_TEXT),
        }
        for kind, found in (("headings", self.english), ("elsewhere", self.english_elsewhere)):
            for text in texts[kind]:
                words = self.english_words(text)
                entry = f"/{path}: {text.strip()!r} ({', '.join(words)})"
                if words and entry not in found:
                    found.append(entry)

    def english_words(self, text: str) -> list[str]:
        for own in sorted(self.own_words, key=len, reverse=True):
            text = text.replace(own, " ")
        text = HEX_ID.sub(" ", text)
        return [w for w in ENGLISH_WORD.findall(text) if w not in SAME_IN_CHINESE]

    def write_report(self) -> str:
        """timings.txt (and english.txt in Chinese) beside the screenshots; the timings."""
        report = self.report()
        (self.shots / "timings.txt").write_text(report + "\n", encoding="utf-8")
        if self.zh:
            english = ["In headings:", *self.english, "Elsewhere:", *self.english_elsewhere]
            (self.shots / "english.txt").write_text("\n".join(english) + "\n", encoding="utf-8")
        return report

    def report(self) -> str:
        lines = [f"{name}: {seconds:.1f} s" for name, seconds in self.timings]
        total = sum(seconds for _, seconds in self.timings)
        lines.append(f"total: {total:.1f} s")
        return "\n".join(lines)
