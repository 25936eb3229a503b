"""Progress of a cohort run: a bar over cases (with ETA) on a terminal, or JSON lines.

JSON events (one object per line on stdout, nothing else there):
``{"event":"started","cases":N,"workers":W,"slots":S}`` (S: worker threads, cases run at once),
``{"event":"case","case":..,"status":"done|failed|skipped","seconds":..,"error":..,"done":k,"total":N}``,
``{"event":"retry","case":..,"error":..}``, ``{"event":"progress","done":k,"total":N,"fraction":..,"eta_s":..}``,
cohort-wide ``{"event":"warning","code":..,"message":..}`` (from ``cmd_batch``, before the end) and at the end
``{"event":"done","output":..,"summary":{...}}``.
"""

from __future__ import annotations

import sys

from .events import dumps


class CaseProgress:
    """Turns the batch runner's events into a tqdm bar, JSON lines or nothing (``mode``)."""

    def __init__(self, mode: str, stream=None):
        self.mode = mode
        self.stream = stream if stream is not None else sys.stdout
        self._bar = None
        self._workers = 1
        self._case_seconds: list = []

    def _json(self, event: dict):
        if self.mode == "json":
            self.stream.write(dumps(event) + "\n")
            self.stream.flush()

    def _line(self, text: str):
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        elif self.mode != "json":
            print(text, file=sys.stderr)

    def __call__(self, event: dict):
        self._json(event)
        kind = event.get("event")
        if kind == "started":
            self._workers = max(1, int(event.get("slots") or event.get("workers") or 1))
            if self.mode == "bar":
                from tqdm import tqdm

                # tqdm's own estimate (elapsed / cases finished) over-counts cases that run at once and
                # counts quick skipped ones: the bar shows this class's estimate (_eta) instead
                self._bar = tqdm(total=event["cases"], file=sys.stderr, unit="case",
                                 desc=f"cases ({event['workers']} workers)",
                                 bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        elif kind == "case":
            done, total = event["done"], event["total"]
            if event["status"] == "done" and event.get("seconds") is not None:
                self._case_seconds.append(float(event["seconds"]))
            eta = self._eta(total - done)
            self._json({"event": "progress", "done": done, "total": total, "fraction": round(done / total, 4),
                        "eta_s": None if eta is None else round(eta, 1)})
            if event["status"] == "failed":
                self._line(f"{event['case']}: failed: {event['error']}")
            elif event["status"] == "skipped":
                self._line(f"{event['case']}: skipped (done before with the same input, plan and engine)")
            if self._bar is not None:
                from tqdm import tqdm

                left = "" if eta is None or done >= total else f"about {tqdm.format_interval(eta)} left"
                self._bar.set_postfix_str(left, refresh=False)
                self._bar.update(1)
        elif kind == "retry":
            self._line(f"{event['case']}: {event['error']}; retrying once")

    def _eta(self, left: int):
        """Seconds left: the mean time of the cases normalized so far (skipped and failed ones are quick)
        times the cases left, shared among the cases that run at once (the elapsed time per finished case
        over-counted parallel runs at the start)."""
        if not left:
            return 0.0
        if not self._case_seconds:
            return None
        mean = sum(self._case_seconds) / len(self._case_seconds)
        return mean * left / self._workers

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def cases_text(n: int) -> str:
    """``"1 case"``, ``"3 cases"``."""
    return f"{n} case{'' if n == 1 else 's'}"


def summarize(records: list) -> dict:
    """``{"cases", "done", "skipped", "failed", "failed_cases"}``."""
    out = {"cases": len(records), "done": 0, "skipped": 0, "failed": 0}
    for r in records:
        out[r["status"]] = out.get(r["status"], 0) + 1
    out["failed_cases"] = [r["case"] for r in records if r["status"] == "failed"]
    return out


def exit_code(records: list) -> int:
    """0 when no case failed; 2 when every failure was bad input; else 1."""
    failed = [r for r in records if r["status"] == "failed"]
    if not failed:
        return 0
    bad_input = all(str(r.get("error", "")).startswith(("BAD_INPUT", "NOT_CT")) for r in failed)
    return 2 if bad_input else 1
