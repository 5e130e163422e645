"""The sandbox's narration: steps in the order they happened, the Retrain decision told, events with their object,
whole messages and rounded numbers. Fed the statuses and events the operator writes, look by look."""

from __future__ import annotations

import re
from typing import Any

from sandbox.story import WIDTH, PolicyStory, events_table

RETRAIN_MESSAGE = (
    "started Job churn-retrain-1a2b3c4d5e: accuracy-drop: model_accuracy over 10s = 0.8123 < 0.9325 for at least "
    "10s (baseline 0.9825, current model's holdout score)"
)


def trigger(state: str, value: float) -> dict[str, Any]:
    return {"name": "accuracy-drop", "state": state, "value": value, "message": f"model_accuracy = {value:.4g}"}


def test_a_retrain_seen_only_as_training_in_progress_is_told_in_order() -> None:
    story = PolicyStory()
    asked: list[str] = []

    def started(job: str) -> str | None:
        asked.append(job)
        return RETRAIN_MESSAGE

    first = story.lines(
        {"triggers": [trigger("pending", 0.85)], "lastDecision": {"action": "Wait", "reason": "TriggerPending"}},
        started=started,
    )
    assert [line.split(":")[0] for line in first] == ["trigger accuracy-drop", "decision"]
    # Between two looks the operator decided Retrain, created the Job, and was woken by the Job at once.
    second = story.lines(
        {
            "triggers": [trigger("firing", 0.81)],
            "activeJob": {"name": "churn-retrain-1a2b3c4d5e"},
            "lastDecision": {
                "action": "Wait",
                "reason": "TrainingInProgress",
                "message": "Job churn-retrain-1a2b3c4d5e is still running",
            },
        },
        started=started,
    )
    assert asked == ["churn-retrain-1a2b3c4d5e"]
    assert second == [
        "trigger accuracy-drop: firing       model_accuracy = 0.81",
        f"decision: Retrain (TriggerFiring): {RETRAIN_MESSAGE}",
        "training Job churn-retrain-1a2b3c4d5e created; its Pod runs `retrain-operator train`",
        "decision: Wait (TrainingInProgress): Job churn-retrain-1a2b3c4d5e is still running",
    ]
    # The same look again says nothing new.
    assert (
        story.lines(
            {
                "activeJob": {"name": "churn-retrain-1a2b3c4d5e"},
                "lastDecision": {"action": "Wait", "reason": "TrainingInProgress"},
            },
            started=started,
        )
        == []
    )


def test_a_retrain_seen_as_such_is_told_once_before_its_job() -> None:
    story = PolicyStory()
    lines = story.lines(
        {
            "activeJob": {"name": "churn-retrain-1"},
            "lastDecision": {"action": "Retrain", "reason": "TriggerFiring", "message": "started Job churn-retrain-1"},
        },
        started=lambda job: None,
    )
    assert lines == [
        "decision: Retrain (TriggerFiring): started Job churn-retrain-1",
        "training Job churn-retrain-1 created; its Pod runs `retrain-operator train`",
    ]


def test_the_new_model_is_told_with_its_score_rounded_then_the_next_decision() -> None:
    story = PolicyStory()
    story.lines({"activeJob": {"name": "j"}}, started=lambda job: None)
    lines = story.lines(
        {
            "lastRetrain": {
                "job": "j",
                "outcome": "Succeeded",
                "message": "model v1 trained and promoted, accuracy 0.9825",
            },
            "model": {
                "version": "v1",
                "metric": "accuracy",
                "score": 0.9824561403508771,
                "uri": "s3://models/churn/v1",
            },
            "lastDecision": {"action": "Wait", "reason": "CoolingDown", "message": "cooling down"},
        },
        started=lambda job: None,
        stored=lambda: ["s3://models/churn/versions/v1/metadata.json (5012 bytes)"],
    )
    assert lines == [
        "Job j Succeeded: model v1 trained and promoted, accuracy 0.9825",
        "  s3://models/churn/versions/v1/metadata.json (5012 bytes)",
        "status.model: version v1, accuracy 0.9825, s3://models/churn/v1",
        "decision: Wait (CoolingDown): cooling down",
    ]


def event(rv: int, name: str, reason: str, message: str, kind: str = "RetrainPolicy") -> dict[str, Any]:
    return {
        "metadata": {"resourceVersion": str(rv)},
        "involvedObject": {"kind": kind, "name": name},
        "type": "Normal",
        "reason": reason,
        "message": message,
    }


def test_events_name_their_object_keep_their_whole_message_and_their_order() -> None:
    long = "not worth it: " + " ".join(f"word{i}" for i in range(60)) + " THE END"
    rows = events_table(
        [
            event(12, "churn-gated", "NotWorthRetraining", long),
            event(10, "churn", "NotWorthRetraining", "not worth it: short"),
        ]
    )
    assert re.split(r"\s+", rows[0].strip()) == ["OBJECT", "TYPE", "REASON", "MESSAGE"]
    assert rows[1].split()[:3] == ["retrainpolicy/churn", "Normal", "NotWorthRetraining"]
    assert rows[2].split()[:3] == ["retrainpolicy/churn-gated", "Normal", "NotWorthRetraining"]
    # The long message is whole, wrapped under its row, never cut.
    told = " ".join(" ".join(rows[2:]).split()[3:])
    assert told == long
    assert all(len(row) <= WIDTH + 40 for row in rows)
    assert len(rows) > 3
