"""The yardstick of the accept-path benchmark: a bare FastAPI endpoint that parses a small pydantic body.

``benchmarks.accept_latency`` serves it with the same uvicorn as the API (one process, same
event loop and HTTP parser), so the ratio of the two throughputs measures what qhybrid's accept
path adds to what FastAPI itself costs on this machine.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, Field

app = FastAPI()


class Item(BaseModel):
    """A small body: a name and a number."""

    name: str = Field(min_length=1, max_length=64)
    value: float


@app.post("/bare", status_code=202)
def bare(item: Item) -> dict[str, str]:
    """Parse the body and answer; nothing is stored."""
    return {"name": item.name}
