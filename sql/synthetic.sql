-- The synthetic shop (src/api/synthetic.rs), all Rust; its documentation.

COMMENT ON FUNCTION personalize.synthetic_items(integer, bigint) IS 'The deterministic synthetic catalogue (item_id, category, title, price) for a number of items and a seed';
COMMENT ON FUNCTION personalize.synthetic_events(bigint, integer, integer, bigint, timestamptz, integer) IS 'The deterministic synthetic shop''s events as track() JSON, in time order: events, users, items, seed, start, days';
COMMENT ON FUNCTION personalize.generate_shop(bigint, integer, integer, bigint, timestamptz, integer) IS 'Fills personalize.items with the synthetic catalogue and tracks the synthetic events through the tracking plan; idempotent for the same arguments (client_event_ids repeat)';
