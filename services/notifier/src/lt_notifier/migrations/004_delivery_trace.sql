-- The W3C traceparent of the consumer span that queued a delivery (NULL without tracing): each send attempt
-- continues the trace of the event it tells about, although it runs later, in the delivery loop.
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS traceparent TEXT;
