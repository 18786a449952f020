-- Notifications (issue 13): an outbox. A row is written in the same transaction as the state
-- change that caused it; the leader's NotificationDeliverer sends it, retrying with backoff,
-- and records every attempt. `delivery_key` is stable across attempts: receivers deduplicate on
-- it (delivery is at least once: a scheduler that dies after sending, before recording, sends
-- again after its lease).
CREATE TABLE notifications (
    id               bigserial PRIMARY KEY,
    delivery_key     text NOT NULL UNIQUE,
    event            text NOT NULL,
    notifier         text NOT NULL,
    flow_id          text NOT NULL,
    run_pk           bigint NOT NULL,
    run_id           text NOT NULL,
    task_id          text,
    try_number       integer,
    state            text NOT NULL,
    error            text,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    last_error       text
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_by_run ON notifications (run_id, id);

CREATE TABLE notification_attempts (
    id               bigserial PRIMARY KEY,
    notification_id  bigint NOT NULL REFERENCES notifications (id),
    at               timestamptz NOT NULL,
    ok               boolean NOT NULL,
    status_code      integer,
    error            text,
    seconds          double precision NOT NULL
);
CREATE INDEX notification_attempts_by_notification ON notification_attempts (notification_id, id);
