//! `/metrics` (Prometheus), `/healthz`, and `/unsubscribe`: the page an unsubscribe link
//! opens (GET shows a button, so link scanners that fetch every URL unsubscribe nobody) and
//! the one-click POST of RFC 8058 that mail clients send.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::db;
use crate::run::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .route("/unsubscribe", get(unsubscribe_page).post(unsubscribe))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    if s.healthy() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the database, or claims stopped answering\n",
        )
            .into_response()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>\n"
    );
    (status, Html(html)).into_response()
}

async fn unsubscribe_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(token) = q.get("token") else {
        return page(
            StatusCode::BAD_REQUEST,
            "Unsubscribe",
            "<p>This link is incomplete.</p>",
        );
    };
    page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<form method=\"post\" action=\"?token={t}\"><p>Stop these messages?</p>\
             <button type=\"submit\" name=\"List-Unsubscribe\" value=\"One-Click\">Unsubscribe</button></form>",
            t = escape(&url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>())
        ),
    )
}

async fn unsubscribe(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let token = q.get("token").cloned().or_else(|| {
        url::form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let Some(token) = token else {
        return page(
            StatusCode::BAD_REQUEST,
            "Unsubscribe",
            "<p>This link is incomplete.</p>",
        );
    };
    let client = s.client.read().unwrap().clone();
    let Some(client) = client else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again",
            "<p>We could not record this just now.</p>",
        );
    };
    match db::unsubscribe(&client, &token).await {
        Ok(Some((_, channel, campaign))) => {
            let what = match campaign {
                Some(c) => format!("these {} messages ({})", escape(&channel), escape(&c)),
                None => format!("{} messages from us", escape(&channel)),
            };
            tracing::info!(channel = %channel, "unsubscribed by link");
            page(
                StatusCode::OK,
                "You are unsubscribed",
                &format!("<p>You will not get {what} any more.</p>"),
            )
        }
        Ok(None) => page(
            StatusCode::BAD_REQUEST,
            "Unsubscribe",
            "<p>This unsubscribe link is not valid.</p>",
        ),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "unsubscribe failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>We could not record this just now.</p>",
            )
        }
    }
}
