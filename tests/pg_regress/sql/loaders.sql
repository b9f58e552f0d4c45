-- Loaders and the synthetic shop: every input row is accounted for.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql
SET TimeZone = 'UTC';

-- Generic: a table of envelope columns (what COPY from a CSV gives you).
CREATE TABLE staging (type text, user_id text, item_id text, occurred_at timestamptz, properties jsonb, client_event_id text);
INSERT INTO staging VALUES
  ('view', 'u1', 'i1', '2026-01-02 10:00', '{"price": 3}', 'g-1'),
  ('view', NULL, 'i1', '2026-01-02 10:01', NULL, 'g-2'),
  ('purchase', 'u1', 'i1', '2026-01-02 10:05', '{"quantity": 1, "price": 3}', 'g-3');
SELECT * FROM personalize.import_events('staging');
SELECT * FROM personalize.import_events('staging');
SELECT pg_temp.err($q$SELECT * FROM personalize.import_events('no_such_table')$q$);
CREATE TABLE wrong_shape (a int);
SELECT pg_temp.err($q$SELECT * FROM personalize.import_events('wrong_shape')$q$);

-- UCI Online Retail rows, dirt included.
CREATE TABLE retail (invoice_no text, stock_code text, description text, quantity text,
                     invoice_date text, unit_price text, customer_id text, country text);
INSERT INTO retail VALUES
  ('536365', '85123A', 'WHITE HANGING HEART T-LIGHT HOLDER', '6', '2010-12-01 08:26:00', '2.55', '17850', 'United Kingdom'),
  ('536365', '85123A', 'WHITE HANGING HEART T-LIGHT HOLDER', '6', '2010-12-01 08:26:00', '2.55', '17850', 'United Kingdom'),
  ('C536379', 'D', 'Discount', '-1', '2010-12-01 09:41:00', '27.50', '14527', 'United Kingdom'),
  ('536414', '22139', NULL, '56', '2010-12-01 11:52:00', '0', NULL, 'United Kingdom'),
  ('A563185', 'B', 'Adjust bad debt', '1', '2011-08-12 14:50:00', '11062.06', NULL, 'United Kingdom'),
  ('536999', '21212', 'CAKE CASES', 'many', '2010-12-02 10:00:00', '0.55', '12345', 'France');
SELECT * FROM personalize.import_online_retail('retail');
SELECT event_type, user_id, item_id, occurred_at, properties FROM personalize.events
 WHERE client_event_id LIKE 'uci:%' ORDER BY event_id;
SELECT batch_position, event_type, reasons FROM personalize.rejected_events
 WHERE source = 'import_online_retail' ORDER BY batch_position;

-- RetailRocket-style rows.
CREATE TABLE rr ("timestamp" bigint, visitorid bigint, event text, itemid bigint, transactionid bigint);
INSERT INTO rr VALUES (1433221332117, 257597, 'view', 355908, NULL),
                      (1433224214164, 992329, 'addtocart', 248676, NULL),
                      (1433221999827, 111016, 'transaction', 318965, 4000),
                      (1433221999999, 111016, 'like', 318965, NULL);
SELECT * FROM personalize.import_retailrocket('rr');
SELECT event_type, user_id, item_id, occurred_at, properties FROM personalize.events
 WHERE client_event_id LIKE 'rr:%' ORDER BY event_id;

-- The synthetic shop is deterministic and passes the default plan.
SELECT * FROM personalize.synthetic_items(5, 1);
SELECT e FROM personalize.synthetic_events(4, users => 10, items => 20, seed => 3) e;
SELECT md5(string_agg(e::text, '|')) FROM personalize.synthetic_events(2000, 100, 50, 9) e;
SELECT md5(string_agg(e::text, '|')) FROM personalize.synthetic_events(2000, 100, 50, 9) e;
SELECT * FROM personalize.generate_shop(3000, users => 200, items => 100, seed => 5);
SELECT * FROM personalize.generate_shop(3000, users => 200, items => 100, seed => 5);
SELECT event_type, count(*) FROM personalize.events WHERE client_event_id LIKE 'syn:5:%' GROUP BY 1 ORDER BY 1;
SELECT pg_temp.err('SELECT * FROM personalize.generate_shop(-1)');
SELECT pg_temp.err('SELECT * FROM personalize.generate_shop(10, users => 0)');
SELECT pg_temp.err($q$SELECT * FROM personalize.generate_shop(10, start => 'infinity')$q$);
