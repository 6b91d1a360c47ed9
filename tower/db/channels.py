"""NOTIFY channel names. Notifications are hints; the tables stay the truth."""

JOB_PENDING = "parpaing_job_pending"  # payload: job_id; a job became claimable
JOB_FINISHED = "parpaing_job_finished"  # payload: job_id; a job reached a terminal state
JOB_CANCELLED = "parpaing_job_cancelled"  # payload: job_id; its owner should stop it
CONFIGS_CHANGED = "parpaing_configs"  # payload: "kind/name"; reload that config
WEBHOOK_DUE = "parpaing_webhook_due"  # payload: ""; a webhook delivery was queued
# payload: "<kind> <job_id> [<job_id> ...]"; those jobs have new events of that kind
# (state, log). Statements that already announce a job on JOB_PENDING or JOB_FINISHED
# do not repeat it here: event streams take those as hints too.
JOB_EVENT = "parpaing_job_event"
KEYS_CHANGED = "parpaing_keys"  # payload: key_id; an API key was revoked or made
TENANTS_CHANGED = "parpaing_tenants"  # payload: tenant name; its quotas changed

ALL = (
    JOB_PENDING,
    JOB_FINISHED,
    JOB_CANCELLED,
    CONFIGS_CHANGED,
    WEBHOOK_DUE,
    JOB_EVENT,
    KEYS_CHANGED,
    TENANTS_CHANGED,
)
