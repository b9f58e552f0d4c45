------------------------------------------------------------------------------------------
-- Ids of any type
------------------------------------------------------------------------------------------

-- A shop's user and item ids are integers (or UUIDs) more often than not. Every function that
-- takes a user or item id has, beside its text form, a form whose id argument is polymorphic
-- (anyelement; anycompatible for a second id of another type) and that calls the text form
-- with the id's text: 7 and '7' are the same id, as they are when an event sends them. A
-- quoted literal still resolves to the text form (a string literal prefers the string
-- category), so existing calls are unchanged. Lists of ids (item_ids, exclude_items) stay
-- text[]: a polymorphic array beside text[] makes an untyped '{...}' literal ambiguous, so a
-- shop passes ARRAY[...]::text[]. Optional ids with a default (a predicate's item_id) stay
-- text: a polymorphic argument cannot default to NULL. tests/pg_regress/sql/shop_data.sql
-- checks that every function with a user or item id argument has this form.

CREATE FUNCTION personalize.recommend(user_id anyelement, k integer DEFAULT 10, model text DEFAULT 'default', exclude text DEFAULT 'purchased', exclude_items text[] DEFAULT NULL, category text DEFAULT NULL, available_only boolean DEFAULT true, fold_in boolean DEFAULT true)
RETURNS TABLE (item_id text, score real, source text, model_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.recommend(CAST(recommend.user_id AS pg_catalog.text), recommend.k, recommend.model, recommend.exclude, recommend.exclude_items, recommend.category, recommend.available_only, recommend.fold_in) $$;
COMMENT ON FUNCTION personalize.recommend(anyelement, integer, text, text, text[], text, boolean, boolean) IS 'recommend() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.similar_items(item_id anyelement, k integer DEFAULT 10, model text DEFAULT 'default', category text DEFAULT NULL, available_only boolean DEFAULT true)
RETURNS TABLE (item_id text, score real, source text, model_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.similar_items(CAST(similar_items.item_id AS pg_catalog.text), similar_items.k, similar_items.model, similar_items.category, similar_items.available_only) $$;
COMMENT ON FUNCTION personalize.similar_items(anyelement, integer, text, text, boolean) IS 'similar_items() with item_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.rank_items(user_id anyelement, item_ids text[], model text DEFAULT 'default', fold_in boolean DEFAULT true)
RETURNS TABLE (item_id text, rank integer, score real)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.rank_items(CAST(rank_items.user_id AS pg_catalog.text), rank_items.item_ids, rank_items.model, rank_items.fold_in) $$;
COMMENT ON FUNCTION personalize.rank_items(anyelement, text[], text, boolean) IS 'rank_items() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.explain_recommendation(user_id anyelement, item_id anycompatible, n integer DEFAULT 5, model text DEFAULT 'default')
RETURNS TABLE (because_of text, contribution real, share real, score real)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.explain_recommendation(CAST(explain_recommendation.user_id AS pg_catalog.text), CAST(explain_recommendation.item_id AS pg_catalog.text), explain_recommendation.n, explain_recommendation.model) $$;
COMMENT ON FUNCTION personalize.explain_recommendation(anyelement, anycompatible, integer, text) IS 'explain_recommendation() with user_id and item_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.assign_variant(experiment text, user_id anyelement)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.assign_variant(assign_variant.experiment, CAST(assign_variant.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.assign_variant(text, anyelement) IS 'assign_variant() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.variant_model(experiment text, user_id anyelement)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.variant_model(variant_model.experiment, CAST(variant_model.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.variant_model(text, anyelement) IS 'variant_model() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.log_exposure(experiment text, user_id anyelement, placement text DEFAULT NULL)
RETURNS text
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.log_exposure(log_exposure.experiment, CAST(log_exposure.user_id AS pg_catalog.text), log_exposure.placement) $$;
COMMENT ON FUNCTION personalize.log_exposure(text, anyelement, text) IS 'log_exposure() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.in_segment(user_id anyelement, segment text)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.in_segment(CAST(in_segment.user_id AS pg_catalog.text), in_segment.segment) $$;
COMMENT ON FUNCTION personalize.in_segment(anyelement, text) IS 'in_segment() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.user_segments(user_id anyelement)
RETURNS SETOF text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.user_segments(CAST(user_segments.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.user_segments(anyelement) IS 'user_segments() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.bought(user_id anyelement, category text DEFAULT NULL, within interval DEFAULT NULL, item_id text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.bought(CAST(bought.user_id AS pg_catalog.text), bought.category, bought.within, bought.item_id) $$;
COMMENT ON FUNCTION personalize.bought(anyelement, text, interval, text) IS 'bought() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.viewed(user_id anyelement, category text DEFAULT NULL, within interval DEFAULT NULL, item_id text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.viewed(CAST(viewed.user_id AS pg_catalog.text), viewed.category, viewed.within, viewed.item_id) $$;
COMMENT ON FUNCTION personalize.viewed(anyelement, text, interval, text) IS 'viewed() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.viewed_without_buying(user_id anyelement, category text DEFAULT NULL, within interval DEFAULT NULL, item_id text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.viewed_without_buying(CAST(viewed_without_buying.user_id AS pg_catalog.text), viewed_without_buying.category, viewed_without_buying.within, viewed_without_buying.item_id) $$;
COMMENT ON FUNCTION personalize.viewed_without_buying(anyelement, text, interval, text) IS 'viewed_without_buying() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.event_count(user_id anyelement, event_type text, within interval DEFAULT NULL)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.event_count(CAST(event_count.user_id AS pg_catalog.text), event_count.event_type, event_count.within) $$;
COMMENT ON FUNCTION personalize.event_count(anyelement, text, interval) IS 'event_count() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.total_spend(user_id anyelement, within interval DEFAULT NULL)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.total_spend(CAST(total_spend.user_id AS pg_catalog.text), total_spend.within) $$;
COMMENT ON FUNCTION personalize.total_spend(anyelement, interval) IS 'total_spend() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.average_order_value(user_id anyelement, within interval DEFAULT NULL)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.average_order_value(CAST(average_order_value.user_id AS pg_catalog.text), average_order_value.within) $$;
COMMENT ON FUNCTION personalize.average_order_value(anyelement, interval) IS 'average_order_value() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.last_seen(user_id anyelement)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.last_seen(CAST(last_seen.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.last_seen(anyelement) IS 'last_seen() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.days_since_last_purchase(user_id anyelement)
RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.days_since_last_purchase(CAST(days_since_last_purchase.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.days_since_last_purchase(anyelement) IS 'days_since_last_purchase() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.upsert_item(item_id anyelement, category text DEFAULT NULL, title text DEFAULT NULL, attributes jsonb DEFAULT '{}', available boolean DEFAULT true, price numeric DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.upsert_item(CAST(upsert_item.item_id AS pg_catalog.text), upsert_item.category, upsert_item.title, upsert_item.attributes, upsert_item.available, upsert_item.price) $$;
COMMENT ON FUNCTION personalize.upsert_item(anyelement, text, text, jsonb, boolean, numeric) IS 'upsert_item() with item_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.set_consent(user_id anyelement, channel text, subscribed boolean, source text DEFAULT 'api', campaign text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.set_consent(CAST(set_consent.user_id AS pg_catalog.text), set_consent.channel, set_consent.subscribed, set_consent.source, set_consent.campaign) $$;
COMMENT ON FUNCTION personalize.set_consent(anyelement, text, boolean, text, text) IS 'set_consent() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.suppress(user_id anyelement, channel text, reason text)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.suppress(CAST(suppress.user_id AS pg_catalog.text), suppress.channel, suppress.reason) $$;
COMMENT ON FUNCTION personalize.suppress(anyelement, text, text) IS 'suppress() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.unsubscribe_token(user_id anyelement, channel text, campaign text DEFAULT NULL)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.unsubscribe_token(CAST(unsubscribe_token.user_id AS pg_catalog.text), unsubscribe_token.channel, unsubscribe_token.campaign) $$;
COMMENT ON FUNCTION personalize.unsubscribe_token(anyelement, text, text) IS 'unsubscribe_token() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.recipient_address(user_id anyelement, channel text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.recipient_address(CAST(recipient_address.user_id AS pg_catalog.text), recipient_address.channel) $$;
COMMENT ON FUNCTION personalize.recipient_address(anyelement, text) IS 'recipient_address() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.identify(anonymous_id anycompatible, user_id anyelement)
RETURNS TABLE (events_moved bigint, messages_moved bigint, messages_cancelled bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.identify(CAST(identify.anonymous_id AS pg_catalog.text), CAST(identify.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.identify(anycompatible, anyelement) IS 'identify() with anonymous_id and user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.forget_user(user_id anyelement)
RETURNS TABLE (table_name text, rows_deleted bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.forget_user(CAST(forget_user.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.forget_user(anyelement) IS 'forget_user() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';
