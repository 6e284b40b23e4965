"""A bare FastAPI app for bench/chaos.py's comparison: one plain ``def`` route (run on the
thread pool, as tunelab's database routes are) answering a job-sized JSON body, no database,
no authentication."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()

BODY: dict[str, Any] = {
    "id": "00000000-0000-0000-0000-000000000000",
    "status": "running",
    "current_step": 12,
    "total_steps": 40,
    "config": {"method": "lora", "max_steps": 40, "learning_rate": 0.005},
    "result": {},
}


@app.get("/ping")
def ping() -> dict[str, Any]:
    return BODY
