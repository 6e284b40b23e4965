"""`tunelab … --help` in the terminal's language: the commands' and options' help is marked
for translation and read when the parser is built (argparse's own words, "usage:" and
"options:", are Python's)."""

from __future__ import annotations

import argparse

from app.cli import build_parser
from app.core.i18n import using_locale


def _subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def test_the_help_is_chinese_in_a_chinese_terminal() -> None:
    with using_locale("zh_CN"):
        parser = build_parser()
        top = parser.format_help()
        run = _subparser(parser, "eval", "run").format_help()
        split = _subparser(parser, "data", "split").format_help()
    assert "启动 Web 服务器" in top and "start the web server" not in top
    assert "一个已完成的训练任务，与其提示基线对比" in run
    assert "tunelab 服务器（默认：$TUNELAB_URL 或 http" in run
    assert "比例（0.05 = 5%）" in split  # argparse's own % formatting still applies
    english = _subparser(build_parser(), "eval", "run").format_help()
    assert "a finished job, compared with its prompting baseline" in english
