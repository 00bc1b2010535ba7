-- Exactly-once at the edges (docs/MARKETPLACE.md, "Edge cases: never bill twice").
--
-- `maybe_sent_by` is the AWS identity (access key id) of a MeterUsage call for this report whose
-- outcome is unknown (no answer, a 5xx, or a crash mid-call). NULL means AWS certainly holds no
-- record from this report. Only that identity may resend it (same task, so the ClientToken
-- deduplicates); anyone else would risk billing the customer twice.
ALTER TABLE usage_reports ADD COLUMN maybe_sent_by text;

-- `unconfirmed`: AWS may already have billed this report and we cannot confirm it. Its events stay
-- attached (never re-billed) and are shown to the operator in /api/v1/usage and /metrics.
ALTER TABLE usage_reports DROP CONSTRAINT usage_reports_status_check;
ALTER TABLE usage_reports ADD CONSTRAINT usage_reports_status_check
    CHECK (status IN ('pending', 'sent', 'failed', 'expired', 'local', 'unconfirmed'));
