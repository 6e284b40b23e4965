"""Record formats built around an instruction: alpaca, and self-instruct (one task, examples)."""

from __future__ import annotations

from typing import Any

from app.datasets.format_base import Checker, Message, RecordFormat, describe, field_list


class AlpacaFormat(RecordFormat):
    name = "alpaca"
    signature = ("instruction", "input", "output")
    fields_hint = "an alpaca record needs `instruction` and `output` (`input` is optional)"

    def normalize(self, record: dict[str, Any]) -> list[Message]:
        check = Checker(record)
        instruction = check.field(
            "instruction", required=True, why="every record needs a task or a question"
        )
        input_text = check.field("input", required=False, why="")
        output = check.field("output", required=True, why="every record needs an answer")
        system = check.field("system", required=False, why="")
        history = self._history(check)
        check.done()
        assert instruction is not None and output is not None

        messages: list[Message] = []
        if system:
            messages.append({"role": "system", "content": system})
        for question, answer in history:
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": answer})
        prompt = f"{instruction}\n\n{input_text}" if input_text else instruction
        messages.append({"role": "user", "content": prompt})
        messages.append({"role": "assistant", "content": output})
        return messages

    def quick(self, record: dict[str, Any]) -> list[Message] | None:
        instruction = record.get("instruction")
        output = record.get("output")
        if type(instruction) is not str or type(output) is not str:
            return None
        if not instruction or instruction.isspace() or not output or output.isspace():
            return None
        if record.get("system") is not None or record.get("history") is not None:
            return None  # rare: let normalize handle them
        text = record.get("input")
        if text is not None:
            if type(text) is not str:
                return None
            if text and not text.isspace():
                instruction = f"{instruction}\n\n{text}"
        return [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}]

    @staticmethod
    def _history(check: Checker) -> list[tuple[str, str]]:
        history = check.record.get("history")
        if history is None:
            return []
        if not isinstance(history, list):
            check.add(
                "history",
                "`history` must be a list of [question, answer] pairs, "
                f"but it is {describe(history)}",
            )
            return []
        pairs: list[tuple[str, str]] = []
        for i, pair in enumerate(history):
            path = f"history[{i}]"
            if not isinstance(pair, list) or len(pair) != 2:
                check.add(
                    path, f"`{path}` must be a pair [question, answer], but it is {describe(pair)}"
                )
                continue
            question = check.text(
                f"{path}[0]", pair[0], required=True, why="an earlier question needs text"
            )
            answer = check.text(
                f"{path}[1]", pair[1], required=True, why="an earlier answer needs text"
            )
            if question is not None and answer is not None:
                pairs.append((question, answer))
        return pairs


class SelfInstructFormat(RecordFormat):
    """A task with several examples: `instruction` + `instances: [{input, output}, …]`."""

    name = "self_instruct"
    signature = ("instruction", "instances")
    fields_hint = (
        'a self-instruct record needs `instruction` and `instances`: [{"input": …, "output": …}, …]'
    )
    splits = True

    def normalize(self, record: dict[str, Any]) -> list[Message]:
        raise TypeError("a self-instruct record holds several conversations: use conversations()")

    def conversations(self, record: dict[str, Any]) -> list[list[Message]]:
        check = Checker(record)
        instruction = check.field(
            "instruction", required=True, why="every record needs a task or a question"
        )
        instances = record.get("instances")
        if "instances" not in record:
            check.add(
                "instances",
                f"`instances` is missing (the record has {field_list(record)}): "
                "every task needs examples with an `output`",
            )
        elif not isinstance(instances, list):
            check.add(
                "instances",
                '`instances` must be a list of examples [{"input": …, "output": …}], '
                f"but it is {describe(instances)}",
            )
        elif not instances:
            check.add(
                "instances", "`instances` is empty: add at least one example with an `output`"
            )
        check.done()
        assert instruction is not None and isinstance(instances, list)

        pairs: list[tuple[str | None, str]] = []
        for i, example in enumerate(instances):
            path = f"instances[{i}]"
            if not isinstance(example, dict):
                check.add(
                    path,
                    f"`{path}` must be an object with `input` and `output`, "
                    f"but it is {describe(example)}",
                )
                continue
            text = None
            if example.get("input") is not None:
                text = check.text(f"{path}.input", example["input"], required=False, why="")
            if "output" not in example:
                check.add(
                    f"{path}.output", f"`{path}.output` is missing: every example needs an answer"
                )
                continue
            output = check.text(
                f"{path}.output",
                example["output"],
                required=True,
                why="every example needs an answer",
            )
            if output is not None:
                pairs.append((text, output))
        check.done()
        return [
            [
                {"role": "user", "content": f"{instruction}\n\n{text}" if text else instruction},
                {"role": "assistant", "content": output},
            ]
            for text, output in pairs
        ]
