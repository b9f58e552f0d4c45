//! Message text from templates: per campaign, else the directory's `default/`, else the
//! built-in defaults below. Templates are minijinja (Jinja2) over the claimed message:
//! `campaign`, `channel`, `user_id`, `payload` (the campaign's rendered JSON),
//! `recommendations`, `unsubscribe_url`, `message_id`, `idempotency_key`. Files ending in
//! `.html` are HTML-escaped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{json, Value};

use crate::message::Message;

const BUILTIN: &[(&str, &str)] = &[
    ("email.subject", "{{ payload.subject or payload.title or campaign }}"),
    (
        "email.txt",
        "{% if payload.body %}{{ payload.body }}\n\n{% endif %}\
{% for item in recommendations %}- {{ item.title or item.item_id }}{% if item.price %} ({{ item.price }}){% endif %}{% if item.url %} {{ item.url }}{% endif %}\n{% endfor %}\
\nUnsubscribe: {{ unsubscribe_url }}\n",
    ),
    (
        "email.html",
        "<!doctype html><html><body>\
{% if payload.body %}<p>{{ payload.body }}</p>{% endif %}\
{% if recommendations %}<ul>{% for item in recommendations %}<li>{% if item.url %}<a href=\"{{ item.url }}\">{% endif %}{{ item.title or item.item_id }}{% if item.url %}</a>{% endif %}{% if item.price %} ({{ item.price }}){% endif %}</li>{% endfor %}</ul>{% endif %}\
<p style=\"font-size:small\"><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>\
</body></html>\n",
    ),
    ("sms.txt", "{{ payload.text or payload.body or payload.title or payload.subject or campaign }}"),
    ("push.title", "{{ payload.title or payload.subject or campaign }}"),
    ("push.body", "{{ payload.body or payload.text or '' }}"),
];

pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    pub fn new(dir: Option<&Path>) -> Result<Renderer> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        for (name, source) in BUILTIN {
            env.add_template_owned(format!("builtin/{name}"), *source)
                .with_context(|| format!("built-in template {name}"))?;
        }
        if let Some(dir) = dir {
            // Load every file now: a syntax error stops the start, not a send.
            let mut files = Vec::new();
            collect(dir, dir, &mut files)?;
            for (name, path) in files {
                let source = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read template {}", path.display()))?;
                env.add_template_owned(name.clone(), source)
                    .with_context(|| format!("template {}", path.display()))?;
            }
        }
        Ok(Renderer { env })
    }

    /// The message's templates, over a context built once for all its parts.
    pub fn view<'a>(&'a self, message: &'a Message) -> MessageView<'a> {
        MessageView {
            env: &self.env,
            message,
            context: minijinja::Value::from_serialize(context(message)),
        }
    }
}

pub struct MessageView<'a> {
    env: &'a Environment<'static>,
    message: &'a Message,
    context: minijinja::Value,
}

impl MessageView<'_> {
    /// Renders part `part` (`email.subject`, `sms.txt`, …): the campaign's template, else
    /// `default/`'s, else the built-in one.
    pub fn render(&self, part: &str) -> Result<String> {
        let name = [
            format!("{}/{part}", self.message.campaign),
            format!("default/{part}"),
            format!("builtin/{part}"),
        ]
        .into_iter()
        .find(|n| self.env.get_template(n).is_ok())
        .with_context(|| format!("no template {part}"))?;
        self.env
            .get_template(&name)?
            .render(&self.context)
            .with_context(|| format!("template {name} for message {}", self.message.message_id))
    }

    /// An inline template (a WhatsApp parameter).
    pub fn render_str(&self, source: &str) -> Result<String> {
        Ok(self.env.render_str(source, &self.context)?)
    }
}

fn context(m: &Message) -> Value {
    json!({
        "campaign": m.campaign,
        "channel": m.channel,
        "user_id": m.user_id,
        "payload": m.payload,
        "recommendations": m.recommendations(),
        "unsubscribe_url": m.unsubscribe_url,
        "message_id": m.message_id,
        "idempotency_key": m.idempotency_key.to_string(),
        "attempt": m.attempt,
    })
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read templates {}", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push((rel.to_string_lossy().replace('\\', "/"), path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn message(payload: Value) -> Message {
        Message {
            message_id: 7,
            lease_token: Uuid::nil(),
            idempotency_key: Uuid::nil(),
            campaign: "cart".into(),
            channel: "email".into(),
            user_id: "U1".into(),
            payload,
            attempt: 1,
            address: Some("a@example.com".into()),
            unsubscribe_url: Some("https://shop.example/u?token=t".into()),
        }
    }

    #[test]
    fn builtin_templates_and_escaping() {
        let r = Renderer::new(None).unwrap();
        let m = message(
            json!({"subject": "Still <there>?", "picks": [{"item_id": "P1", "title": "Tea & cake", "price": 3.5}]}),
        );
        assert_eq!(
            r.view(&m).render("email.subject").unwrap(),
            "Still <there>?"
        );
        let text = r.view(&m).render("email.txt").unwrap();
        assert!(
            text.contains("- Tea & cake (3.5)")
                && text.contains("Unsubscribe: https://shop.example/u?token=t"),
            "{text}"
        );
        let html = r.view(&m).render("email.html").unwrap();
        assert!(
            html.contains("Tea &amp; cake")
                && html.contains("href=\"https:&#x2f;&#x2f;shop.example")
                || html.contains("href=\"https://shop.example"),
            "{html}"
        );
        assert_eq!(
            r.view(&message(json!({}))).render("push.title").unwrap(),
            "cart"
        );
    }

    #[test]
    fn campaign_templates_win() {
        let dir = std::env::temp_dir().join(format!("pw-templates-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cart")).unwrap();
        std::fs::write(dir.join("cart/email.subject"), "Your cart, {{ user_id }}").unwrap();
        std::fs::create_dir_all(dir.join("default")).unwrap();
        std::fs::write(dir.join("default/sms.txt"), "Hi {{ payload.name }}").unwrap();
        let r = Renderer::new(Some(&dir)).unwrap();
        let m = message(json!({"name": "Ann"}));
        assert_eq!(r.view(&m).render("email.subject").unwrap(), "Your cart, U1");
        assert_eq!(r.view(&m).render("sms.txt").unwrap(), "Hi Ann");
        std::fs::write(dir.join("default/push.title"), "{% if %}").unwrap();
        assert!(
            Renderer::new(Some(&dir)).is_err(),
            "a broken template stops the start"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
