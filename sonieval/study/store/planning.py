"""Raters and their plans: inviting raters (each with their seeded plan of pages), finding a rater by
token, and where a rater is in their plan (the next page, when a page was first shown)."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from sonieval.study.design import PlanStep, Trial, rater_plan, rater_seed
from sonieval.study.store.core import StoreCore
from sonieval.study.store.records import Rater, StepState, StudyError, StudyInfo, rater_of
from sonieval.study.store.schema import page_trials, plan, raters, ratings
from sonieval.study.tokens import hash_token, looks_like_token, new_token


class Planning(StoreCore):
    """Raters, their plans and their place in them."""

    def _add_rater(self, conn, info: StudyInfo, trial_list: list[Trial], index: int) -> tuple[str, str]:
        """Insert rater number ``index`` and their plan; returns (rater_id, token). Raises IntegrityError
        when another process took the index meanwhile."""
        rater_id = f"r{index + 1:03d}"
        seed = rater_seed(info.seed, rater_id)
        steps = rater_plan(trial_list, info.config, index, seed)
        blocks: list[str] = []
        for s in steps:
            if s.block not in blocks:
                blocks.append(s.block)
        token = new_token()
        conn.execute(
            raters.insert().values(
                study_id=info.study_id,
                rater_id=rater_id,
                token_hash=hash_token(token),
                rater_index=index,
                seed=seed,
                block_order=",".join(blocks),
                created_at=self.clock(),
                familiarised_at=None,
            )
        )
        conn.execute(
            plan.insert(),
            [
                {
                    "study_id": info.study_id,
                    "rater_id": rater_id,
                    "position": s.position,
                    "trial_id": s.trial_id,
                    "attributes": ",".join(s.attributes),
                    "block": s.block,
                    "shown_at": None,
                }
                for s in steps
            ],
        )
        multi = [
            {"study_id": info.study_id, "rater_id": rater_id, "position": s.position, "slot": k, "trial_id": t}
            for s in steps
            if s.block == "multi"
            for k, t in enumerate(s.trial_ids)
        ]
        if multi:
            conn.execute(page_trials.insert(), multi)
        return rater_id, token

    def _count_raters(self, conn, study_id: str) -> int:
        return int(
            conn.execute(select(func.count()).select_from(raters).where(raters.c.study_id == study_id)).scalar() or 0
        )

    def invite(self, study_id: str, n: int) -> list[tuple[str, str]]:
        """Mint ``n`` raters with their plans; returns (rater_id, token) pairs (tokens shown once)."""
        if n < 1:
            raise StudyError(f"cannot invite {n} raters", hint="give a positive number")
        info = self.study(study_id)
        trial_list = list(self.trials(study_id).values())
        out = []
        for _ in range(n):
            for _attempt in range(5):  # another process inviting at the same time takes the same index
                try:
                    with self.engine.begin() as conn:
                        out.append(self._add_rater(conn, info, trial_list, self._count_raters(conn, study_id)))
                    break
                except IntegrityError:
                    continue
            else:
                raise StudyError(
                    f"study {study_id!r}: could not allocate a rater id (concurrent invites)", hint="retry"
                )
        return out

    def rater_for_token(self, study_id: str, token: object) -> Rater | None:
        """The rater whose token this is, or None (wrong, guessed or malformed tokens alike)."""
        if not looks_like_token(token):
            return None
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(raters).where(raters.c.study_id == study_id, raters.c.token_hash == hash_token(token))  # type: ignore[arg-type]
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return rater_of(row)

    def rater_by_id(self, study_id: str, rater_id: str) -> Rater:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(raters).where(raters.c.study_id == study_id, raters.c.rater_id == rater_id))
                .mappings()
                .first()
            )
        if row is None:
            raise StudyError(f"rater {rater_id!r} not in study {study_id!r}")
        return rater_of(row)

    def set_familiarised(self, rater: Rater) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(raters)
                .where(
                    raters.c.study_id == rater.study_id,
                    raters.c.rater_id == rater.rater_id,
                    raters.c.familiarised_at.is_(None),
                )
                .values(familiarised_at=self.clock())
            )

    def plan_of(self, rater: Rater) -> list[tuple[PlanStep, float | None]]:
        where = (plan.c.study_id == rater.study_id, plan.c.rater_id == rater.rater_id)
        with self.engine.connect() as conn:
            rows = conn.execute(select(plan).where(*where).order_by(plan.c.position)).mappings().all()
            slots: dict[int, list[str]] = {}
            if any(r["block"] == "multi" for r in rows):
                for pos, tid in conn.execute(
                    select(page_trials.c.position, page_trials.c.trial_id)
                    .where(page_trials.c.study_id == rater.study_id, page_trials.c.rater_id == rater.rater_id)
                    .order_by(page_trials.c.position, page_trials.c.slot)
                ):
                    slots.setdefault(pos, []).append(tid)
        return [
            (
                PlanStep(
                    r["position"],
                    r["trial_id"],
                    tuple(r["attributes"].split(",")),
                    r["block"],
                    tuple(slots.get(r["position"], ())),
                ),
                r["shown_at"],
            )
            for r in rows
        ]

    def marked(self, rater: Rater) -> set[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ratings.c.trial_id, ratings.c.attribute).where(
                    ratings.c.study_id == rater.study_id, ratings.c.rater_id == rater.rater_id
                )
            ).all()
        return {(r[0], r[1]) for r in rows}

    def step_state(
        self, rater: Rater, step: PlanStep, shown_at: float | None, done: int, total: int, **kw
    ) -> StepState:
        by_id = self.trials(rater.study_id)
        page = tuple(by_id[t] for t in step.trial_ids)
        return StepState(step, page[0], done, total, shown_at, trials=page, **kw)

    def next_step(self, rater: Rater) -> StepState:
        """The first page of the rater's plan with a mark not yet given (resume point)."""
        steps = self.plan_of(rater)
        done_marks = self.marked(rater)
        done = 0
        for i, (step, shown_at) in enumerate(steps):
            if page_done(step, done_marks):
                done += 1
                continue
            following = next((s for s, _ in steps[i + 1 :] if not page_done(s, done_marks)), None)
            return self.step_state(rater, step, shown_at, done, len(steps), following=following)
        return StepState(None, None, done, len(steps))

    def mark_shown(self, rater: Rater, position: int, known: float | None = None) -> float:
        """Record when a page was first shown (kept across reloads); returns that time.

        Read first: a page shown before needs no write (on SQLite every UPDATE takes the database's
        write lock, even one that changes no row, and a crowd reloads pages all the time).
        ``known``: the time the caller already read with the plan (no read needed)."""
        if known is not None:
            return float(known)
        key = (plan.c.study_id == rater.study_id, plan.c.rater_id == rater.rater_id, plan.c.position == position)
        with self.engine.connect() as conn:
            shown = conn.execute(select(plan.c.shown_at).where(*key)).scalar()
        if shown is not None:
            return float(shown)
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                update(plan)
                .where(
                    plan.c.study_id == rater.study_id,
                    plan.c.rater_id == rater.rater_id,
                    plan.c.position == position,
                    plan.c.shown_at.is_(None),
                )
                .values(shown_at=now)
            )
            shown = conn.execute(
                select(plan.c.shown_at).where(
                    plan.c.study_id == rater.study_id, plan.c.rater_id == rater.rater_id, plan.c.position == position
                )
            ).scalar()
        return float(shown) if shown is not None else now


def page_done(step: PlanStep, done_marks: set[tuple[str, str]]) -> bool:
    return all((t, a) in done_marks for t in step.trial_ids for a in step.attributes)


__all__ = ["Planning", "page_done"]
