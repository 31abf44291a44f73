-- The profiling store: what each kind of hardware does with each engine and configuration,
-- how that holds up online, and what happened to every request.

-- Kinds of hardware. Profiles are keyed by device class, not by worker: workers of one class
-- share one characterisation.
CREATE TABLE device_classes (
    name       text PRIMARY KEY,
    arch       text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now()
);

-- Catalogue models (loaded from the catalogue at store start-up; a profile naming an unknown
-- model registers the name).
CREATE TABLE models (
    name          text PRIMARY KEY,
    task          text,
    dynamic_batch boolean,
    max_batch     integer,
    sha256        text,
    source        text,
    inputs        jsonb,
    outputs       jsonb,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workers (
    id           text PRIMARY KEY,
    site         text NOT NULL,
    tier         text NOT NULL CHECK (tier IN ('edge', 'cloud')),
    arch         text NOT NULL,
    device_class text NOT NULL REFERENCES device_classes (name),
    core_set     integer[] NOT NULL,
    engines      text[] NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workers_site ON workers (site);
CREATE INDEX workers_device_class ON workers (device_class);

-- Every write to profiles, unsupported or online_observations takes the next revision (under an
-- advisory lock, so revisions commit in order); the largest one stored tells a cache whether it
-- is current.
CREATE SEQUENCE profile_revision;

-- Offline profiles: one row per (device class, engine, model, threads, batch).
CREATE TABLE profiles (
    device_class    text NOT NULL REFERENCES device_classes (name),
    engine          text NOT NULL,
    model           text NOT NULL REFERENCES models (name),
    threads         integer NOT NULL CHECK (threads > 0),
    batch           integer NOT NULL CHECK (batch > 0),
    mean_ms         double precision NOT NULL CHECK (mean_ms >= 0),
    p50_ms          double precision NOT NULL CHECK (p50_ms >= 0),
    p95_ms          double precision NOT NULL CHECK (p95_ms >= 0),
    p99_ms          double precision NOT NULL CHECK (p99_ms >= 0),
    min_ms          double precision NOT NULL CHECK (min_ms >= 0),
    max_ms          double precision NOT NULL CHECK (max_ms >= 0),
    qps             double precision NOT NULL CHECK (qps >= 0),
    peak_rss_bytes  bigint NOT NULL,
    runs            integer NOT NULL CHECK (runs > 0),
    warmup          integer NOT NULL,
    measured_at     timestamptz NOT NULL,
    worker          text NOT NULL,
    arch            text NOT NULL,
    cpu_model       text NOT NULL,
    core_set        integer[] NOT NULL,
    engine_version  text NOT NULL,
    library_version text NOT NULL,
    revision        bigint NOT NULL,
    PRIMARY KEY (device_class, engine, model, threads, batch)
);
-- "best configuration of a model on a device class" and per-model views.
CREATE INDEX profiles_class_model ON profiles (device_class, model);
CREATE INDEX profiles_model ON profiles (model);
CREATE INDEX profiles_revision ON profiles (revision);

-- (device class, engine, model) pairs an engine cannot run, with the engine's reason.
CREATE TABLE unsupported (
    device_class text NOT NULL REFERENCES device_classes (name),
    engine       text NOT NULL,
    model        text NOT NULL REFERENCES models (name),
    reason       text NOT NULL,
    worker       text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    revision     bigint NOT NULL,
    PRIMARY KEY (device_class, engine, model)
);

-- Online refinement: an exponentially weighted estimate of each key's execution time from
-- completed jobs. No foreign key to profiles: a key can be observed before it is profiled.
CREATE TABLE online_observations (
    device_class text NOT NULL,
    engine       text NOT NULL,
    model        text NOT NULL,
    threads      integer NOT NULL CHECK (threads > 0),
    batch        integer NOT NULL CHECK (batch > 0),
    ewma_ms      double precision NOT NULL,
    count        bigint NOT NULL CHECK (count > 0),
    last_ms      double precision NOT NULL,
    last_update  timestamptz NOT NULL,
    revision     bigint NOT NULL,
    PRIMARY KEY (device_class, engine, model, threads, batch)
);
CREATE INDEX online_observations_revision ON online_observations (revision);

-- The request ledger: one row per request with its terminal outcome. The id is the key, so a
-- redelivered outcome event is ignored rather than counted twice.
CREATE TABLE ledger (
    request_id  text PRIMARY KEY,
    model       text NOT NULL,
    slo_ms      double precision NOT NULL,
    arrival     timestamptz NOT NULL,
    policy      text NOT NULL,
    site        text,
    worker      text,
    engine      text,
    threads     integer,
    batch       integer,
    code        smallint NOT NULL,
    queue_ms    double precision,
    exec_ms     double precision,
    total_ms    double precision NOT NULL,
    violated    boolean NOT NULL,
    excess_ms   double precision NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
-- Summaries filter by time range and group by policy, model or site.
CREATE INDEX ledger_arrival ON ledger (arrival);
CREATE INDEX ledger_policy_arrival ON ledger (policy, arrival);
CREATE INDEX ledger_model_arrival ON ledger (model, arrival);
CREATE INDEX ledger_site_arrival ON ledger (site, arrival);
