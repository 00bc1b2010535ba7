//! Runs the built-in chat (understand → retrieve → compose) over a questions file against a
//! database with the KB loaded, and prints one JSON line per question: id, intent, frameworks,
//! named control ids, citation ids, covered. `bench/chat_builtin_eval.py` scores the output as
//! `bench/chat_eval.py --chat` scores the API.
//!
//!     DATABASE_URL=postgres://…/co_eval cargo run --example chat_answers -- tests/chat/questions.json [--text]
//!
//! The database is migrated and the shipped KB (`data/compliance`) loaded when it is not yet.

use std::path::Path;
use std::sync::Arc;

use cloud_optimizer::chat::{answer, understand};
use cloud_optimizer::kb::{self, KbState};
use cloud_optimizer::runtime::Components;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cloud_optimizer::ensure_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = args
        .first()
        .map_or("tests/chat/questions.json", String::as_str);
    let show_text = args.iter().any(|a| a == "--text");
    let db = sqlx::PgPool::connect(&std::env::var("DATABASE_URL")?).await?;
    cloud_optimizer::db::migrate(&db).await?;
    kb::load::load_dir(&db, Path::new("data/compliance"), "data/compliance").await?;
    let state = KbState {
        db: db.clone(),
        source: Arc::new("data/compliance".into()),
        cache: Arc::new(kb::cache::KbCache::new(10)),
        search: Default::default(),
        graph: None,
        components: Arc::new(Components::new(false, false)),
        automated: Arc::new(Vec::new()),
    };
    let questions: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(file)?)?;
    for q in questions {
        let text = q["question"].as_str().unwrap_or_default();
        let u = understand::understand(&state, text).await?;
        let g = answer::retrieve(&state, text, &u).await?;
        let a = answer::compose(text, &u, &g);
        let (verified, unknown) = answer::verify(&state, &a.text).await?;
        let consistent = verified
            .iter()
            .map(|c| &c.id)
            .eq(a.citations.iter().map(|c| &c.id));
        let mut line = serde_json::json!({
            "id": q["id"],
            "intent": u.intent,
            "frameworks": u.frameworks.iter().map(|f| format!("{}@{}", f.id, f.version)).collect::<Vec<_>>(),
            "services": u.services,
            "named": u.control_ids,
            "citations": a.citations.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
            "covered": a.covered,
            "verify_consistent": consistent && unknown.is_empty(),
        });
        if show_text {
            line["text"] = a.text.into();
        }
        println!("{line}");
    }
    Ok(())
}
