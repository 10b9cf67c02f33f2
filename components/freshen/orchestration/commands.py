"""The CLI verbs orchestration adds to `freshen`, and the exit code that means "skipped".

A step that has nothing to do (DVC versioning turned off, a corrected index that the real
re-embedding already replaced) exits with SKIP_EXIT; every runner turns that into an Airflow
"skipped" state (DockerOperator / KubernetesPodOperator through `skip_on_exit_code`)."""

from __future__ import annotations

from freshen.orchestration.pipeline import REFRESH

SKIP_EXIT = 99
# what `freshen <step>` exits with on a FreshenError (bad params or data): the same input fails the
# same way again, so the runners fail such a task at once instead of retrying it
DETERMINISTIC_EXIT = 2

# steps: modules under freshen.steps with run(params, root, log, **options), each in an MLflow child run
ORCHESTRATION_STEPS = REFRESH.names
# pipeline-run bookkeeping: no child run of their own
RUN_COMMANDS = ("start_run", "end_run")


class StepSkipped(Exception):
    """Raised by a runner when the step exited with SKIP_EXIT."""


class StepFailed(Exception):
    """Raised by a runner when the step exited with any other non-zero code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code

    @property
    def deterministic(self) -> bool:
        return self.code == DETERMINISTIC_EXIT
