"""The job page's loss chart labels its x axis with whole steps, each once."""

from __future__ import annotations

from app.web.charts import line_chart


def labels(steps: int) -> list[str]:
    chart = line_chart([(s, 1.0 / s) for s in range(1, steps + 1)], label="loss")
    return [text for _, text in chart.x_ticks]


def test_a_short_run_names_each_step_once() -> None:
    assert labels(1) == ["1"]
    assert labels(2) == ["1", "2"]
    assert labels(5) == ["1", "2", "3", "4", "5"]


def test_a_long_run_is_labelled_every_round_number_of_steps() -> None:
    assert labels(12) == ["2", "4", "6", "8", "10", "12"]
    assert labels(100) == ["20", "40", "60", "80", "100"]
    for steps in range(1, 300):
        names = labels(steps)
        assert len(names) == len(set(names)) <= 8
