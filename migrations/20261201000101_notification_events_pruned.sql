-- The highest event id retention has deleted. A client asking to resume after an id below it
-- would silently miss events, so it is told instead (410 `since_expired`) and starts over.
CREATE TABLE events_pruned (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    through  bigint  NOT NULL
);
INSERT INTO events_pruned (through) VALUES (0);
