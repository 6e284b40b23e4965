"""How often a run validates when its config does not say (worker.spec.validation)."""

from __future__ import annotations

import pytest

from worker.spec.validation import MIN_STEPS_APART, validation_interval


@pytest.mark.parametrize(
    ("total", "every"), [(1, 5), (3, 5), (10, 5), (12, 5), (50, 5), (51, 6), (200, 20)]
)
def test_short_runs_do_not_validate_after_every_step(total: int, every: int) -> None:
    assert validation_interval(total) == every


def test_a_run_validates_about_ten_times_and_never_closer_than_the_minimum() -> None:
    for total in range(1, 2_000):
        every = validation_interval(total)
        assert every >= MIN_STEPS_APART
        assert total // every <= 10


def test_the_config_s_own_value_wins() -> None:
    assert validation_interval(10, 1) == 1
    assert validation_interval(1_000, 7) == 7


def test_catalog_models_say_their_languages_and_which_speak_chinese() -> None:
    from worker.spec.catalog import catalog_listing

    rows = {r["name"]: r for r in catalog_listing()}
    assert all(r["languages"] for r in rows.values()), "every catalog model has its languages"
    assert rows["qwen2.5-0.5b-instruct"]["chinese"] and rows["glm-4-9b-0414"]["chinese"]
    assert not rows["smollm2-135m-instruct"]["chinese"]
