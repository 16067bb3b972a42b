//! Server-side HTML: `/dashboard` and `/login`, in the tenant's locale and theme colour.
//!
//! Every value that comes from a tenant or a user is HTML-escaped ([`escape`]); the theme
//! colour is used only after it validated as a CSS hex colour ([`crate::TenantSettings`]).
//!
//! - `GET /dashboard` (permission `items:read`, bearer token or session cookie): the tenant's
//!   name, its item count and its ten newest items. Without a credential: a redirect to `/login`.
//! - `GET /login`: a form asking for the token the admin API minted.
//! - `POST /login` (`token=…`, form-encoded): refuses a browser's cross-origin post (403
//!   `cross_origin`) and a client past its failed-login budget (429 `login_throttled`), see
//!   [`crate::login`]; checks the token against the tenant database and sets the HttpOnly
//!   session cookie [`crate::rbac::SESSION_COOKIE`], then redirects to the dashboard; a bad
//!   token gets the form again with 401. Both are recorded in the tenant's audit trail.
//!
//! Every page carries a `Content-Security-Policy` that allows no script and only the page's
//! own stylesheet (by hash), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: same-origin` ([`html`]).

use axum::extract::{Form, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tenantgate_contract::crypto::{hash_token, sha256_base64};

use crate::audit;
use crate::context::TenantContext;
use crate::cookies;
use crate::error::AppError;
use crate::items;
use crate::login;
use crate::rbac::{Credential, Permission, SESSION_COOKIE};
use crate::sessions;
use crate::state::AppState;

/// Theme colour when the tenant set none.
const DEFAULT_COLOUR: &str = "#3b5bdb";
/// Items listed on the dashboard.
const RECENT: i64 = 10;

/// Text of the pages in one language.
#[derive(Debug)]
pub struct Messages {
    pub lang: &'static str,
    pub dashboard: &'static str,
    pub items: &'static str,
    pub recent_items: &'static str,
    pub no_items: &'static str,
    pub signed_in_as: &'static str,
    pub login_title: &'static str,
    pub login_prompt: &'static str,
    pub token_label: &'static str,
    pub login_button: &'static str,
    pub login_failed: &'static str,
    pub logout_button: &'static str,
}

const EN: Messages = Messages {
    lang: "en",
    dashboard: "Dashboard",
    items: "Items",
    recent_items: "Recent items",
    no_items: "No items yet.",
    signed_in_as: "Signed in as",
    login_title: "Sign in",
    login_prompt: "Paste the access token you were given.",
    token_label: "Access token",
    login_button: "Sign in",
    login_failed: "This token is not valid.",
    logout_button: "Sign out",
};

const DE: Messages = Messages {
    lang: "de",
    dashboard: "Übersicht",
    items: "Einträge",
    recent_items: "Neueste Einträge",
    no_items: "Noch keine Einträge.",
    signed_in_as: "Angemeldet als",
    login_title: "Anmelden",
    login_prompt: "Fügen Sie das Zugangstoken ein, das Sie erhalten haben.",
    token_label: "Zugangstoken",
    login_button: "Anmelden",
    login_failed: "Dieses Token ist ungültig.",
    logout_button: "Abmelden",
};

const FR: Messages = Messages {
    lang: "fr",
    dashboard: "Tableau de bord",
    items: "Éléments",
    recent_items: "Éléments récents",
    no_items: "Aucun élément pour l’instant.",
    signed_in_as: "Connecté en tant que",
    login_title: "Connexion",
    login_prompt: "Collez le jeton d’accès qui vous a été remis.",
    token_label: "Jeton d’accès",
    login_button: "Se connecter",
    login_failed: "Ce jeton n’est pas valide.",
    logout_button: "Se déconnecter",
};

const ES: Messages = Messages {
    lang: "es",
    dashboard: "Panel",
    items: "Elementos",
    recent_items: "Elementos recientes",
    no_items: "Todavía no hay elementos.",
    signed_in_as: "Sesión iniciada como",
    login_title: "Iniciar sesión",
    login_prompt: "Pegue el token de acceso que recibió.",
    token_label: "Token de acceso",
    login_button: "Entrar",
    login_failed: "Este token no es válido.",
    logout_button: "Cerrar sesión",
};

/// The messages for `locale` (`de`, `de-AT`, `de_CH` → German); English when we lack it.
pub fn messages(locale: &str) -> &'static Messages {
    let lang = locale
        .split(['-', '_'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match lang.as_str() {
        "de" => &DE,
        "fr" => &FR,
        "es" => &ES,
        _ => &EN,
    }
}

/// `text` safe inside HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A rendered page and the one inline stylesheet it carries, which its
/// `Content-Security-Policy` allows by hash.
struct Page {
    body: String,
    style: String,
}

fn page(ctx: &TenantContext, m: &Messages, title: &str, main: &str) -> Page {
    let colour = ctx.settings().theme_color().unwrap_or(DEFAULT_COLOUR);
    let style = format!(
        "body{{font-family:system-ui,sans-serif;margin:0;color:#222}}\
header{{background:{colour};color:#fff;padding:1rem 2rem}}main{{padding:1rem 2rem}}\
.count{{font-size:2rem;font-weight:bold}}li{{margin:.25rem 0}}time{{color:#666;margin-left:.5rem}}"
    );
    let body = format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · {name}</title><style>{style}</style>\
</head><body><header><h1>{name}</h1></header><main>{main}</main></body></html>\n",
        lang = m.lang,
        name = escape(ctx.name()),
    );
    Page { body, style }
}

/// The `Content-Security-Policy` of a page whose only inline content is `style`.
///
/// Nothing may load or run but that one stylesheet (allowed by its hash, so an injected
/// `<style>` or `style=` attribute would not apply either): no scripts at all, no framing
/// (`frame-ancestors`, with `X-Frame-Options` for older browsers), no `<base>` rewriting, and
/// forms post only to this origin.
fn content_security_policy(style: &str) -> String {
    format!(
        "default-src 'none'; style-src 'sha256-{}'; form-action 'self'; \
frame-ancestors 'none'; base-uri 'none'",
        sha256_base64(style.as_bytes())
    )
}

/// An HTML response with the page's security headers.
///
/// `Referrer-Policy: same-origin` keeps URLs (tenant prefixes, ids) from other sites while still
/// letting the browser send this origin in `Origin` on the login form's POST: under
/// `no-referrer` browsers send `Origin: null` even for same-origin posts, which
/// [`crate::login::check_origin`] would refuse.
fn html(status: StatusCode, page: Page) -> Response {
    let csp = content_security_policy(&page.style);
    let mut response = (
        status,
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        page.body,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::try_from(csp).expect("base64 and ASCII text are valid header text"),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // Pages show tenant data for a signed-in user: never from a shared cache.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /dashboard`.
pub(crate) async fn dashboard(
    ctx: TenantContext,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let base = ctx.base_path();
    let Some(cred) = Credential::from_headers(&headers) else {
        return Ok((StatusCode::SEE_OTHER, [(LOCATION, format!("{base}/login"))]).into_response());
    };
    let (user, mut db) = cred.read(&ctx, Permission::ItemsRead).await?;
    let total = items::count(&mut db).await?;
    let recent = items::recent(&mut db, RECENT).await?;
    drop(db);
    let m = messages(ctx.settings().locale());
    let mut list = String::new();
    if recent.is_empty() {
        list.push_str(&format!("<p class=\"empty\">{}</p>", escape(m.no_items)));
    } else {
        list.push_str("<ul class=\"recent\">");
        for item in &recent {
            list.push_str(&format!(
                "<li>{}<time datetime=\"{at}\">{at}</time></li>",
                escape(&item.title),
                at = escape(&item.created_at),
            ));
        }
        list.push_str("</ul>");
    }
    let main = format!(
        "<h2>{dashboard}</h2><p class=\"user\">{signed_in} {email}</p>\
<form method=\"post\" action=\"{logout}\"><button type=\"submit\">{logout_button}</button></form>\
<section><h3>{items}</h3><p class=\"count\" data-count=\"{total}\">{total}</p></section>\
<section><h3>{recent}</h3>{list}</section>",
        dashboard = escape(m.dashboard),
        signed_in = escape(m.signed_in_as),
        email = escape(&user.email),
        logout = escape(&format!("{base}/logout")),
        logout_button = escape(m.logout_button),
        items = escape(m.items),
        recent = escape(m.recent_items),
    );
    Ok(html(StatusCode::OK, page(&ctx, m, m.dashboard, &main)))
}

fn login_form(ctx: &TenantContext, failed: bool) -> Page {
    let m = messages(ctx.settings().locale());
    let error = if failed {
        format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(m.login_failed)
        )
    } else {
        String::new()
    };
    let main = format!(
        "<h2>{title}</h2>{error}<p>{prompt}</p>\
<form method=\"post\" action=\"{action}\"><label>{label} \
<input type=\"password\" name=\"token\" autocomplete=\"off\" required></label> \
<button type=\"submit\">{button}</button></form>",
        title = escape(m.login_title),
        prompt = escape(m.login_prompt),
        action = escape(&format!("{}/login", ctx.base_path())),
        label = escape(m.token_label),
        button = escape(m.login_button),
    );
    page(ctx, m, m.login_title, &main)
}

/// `GET /login`.
pub(crate) async fn login_page(ctx: TenantContext) -> Response {
    html(StatusCode::OK, login_form(&ctx, false))
}

/// Form of `POST /login`.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// `POST /login`.
pub(crate) async fn login(
    State(state): State<AppState>,
    ctx: TenantContext,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    login::check_origin(&headers)?;
    let attempt = ctx.login_attempt()?;
    let token = form.token.trim();
    // Tokens are base64url; anything else cannot be one.
    let plausible = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let mut db = None;
    let user = if plausible {
        let db = db.insert(ctx.db().await?);
        Credential::from_token(token).authenticate(db).await
    } else {
        Err(AppError::Unauthenticated)
    };
    let (user, mut db) = match (attempt.settle(user), db) {
        (Ok(user), Some(db)) => (user, db),
        (Err(e), _) if !matches!(e, AppError::Unauthenticated) => return Err(e),
        // A bad token (a user is only ever found on a connection). Failures the throttle let
        // through are recorded; those it refused (429) are not, so a flood cannot fill the trail.
        (_, db) => {
            let mut db = match db {
                Some(db) => db,
                None => ctx.db().await?,
            };
            audit::record_login(&mut db, &ctx, None).await?;
            return Ok(html(StatusCode::UNAUTHORIZED, login_form(&ctx, true)));
        }
    };
    let session = sessions::open(
        &mut db,
        &user,
        &hash_token(token),
        cookies::read(&headers, SESSION_COOKIE),
        state.config().app.session_ttl,
    )
    .await?;
    audit::record_login(&mut db, &ctx, Some(&user)).await?;
    drop(db);
    let base = ctx.base_path();
    let mut response = (
        StatusCode::SEE_OTHER,
        [(LOCATION, format!("{base}/dashboard"))],
    )
        .into_response();
    let attributes = format!(
        "HttpOnly; SameSite=Strict; Max-Age={}{}",
        session.max_age_secs,
        secure_attribute(&headers)
    );
    cookies::set(
        response.headers_mut(),
        SESSION_COOKIE,
        &session.id,
        base,
        &attributes,
    );
    Ok(response)
}

/// `; Secure` when the client's connection is TLS (the edge's `x-forwarded-proto`): the
/// browser then never sends the cookie over plain HTTP.
fn secure_attribute(headers: &HeaderMap) -> &'static str {
    let tls = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if tls {
        "; Secure"
    } else {
        ""
    }
}

/// `POST /logout`: end the browser's session (the row, so a copy of the cookie is worthless
/// too), clear the cookie and go to the login form. Refuses cross-origin posts like `/login`:
/// a foreign page must not sign users out either.
pub(crate) async fn logout(ctx: TenantContext, headers: HeaderMap) -> Result<Response, AppError> {
    login::check_origin(&headers)?;
    if let Some(id) = cookies::read(&headers, SESSION_COOKIE).filter(|id| !id.is_empty()) {
        let mut db = ctx.db().await?;
        sessions::end(&mut db, id).await?;
    }
    let base = ctx.base_path();
    let mut response =
        (StatusCode::SEE_OTHER, [(LOCATION, format!("{base}/login"))]).into_response();
    let attributes = format!(
        "HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure_attribute(&headers)
    );
    cookies::set(
        response.headers_mut(),
        SESSION_COOKIE,
        "",
        base,
        &attributes,
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn picks_messages_by_language() {
        assert_eq!(messages("de").lang, "de");
        assert_eq!(messages("de-AT").lang, "de");
        assert_eq!(messages("FR_ca").lang, "fr");
        assert_eq!(messages("es").lang, "es");
        assert_eq!(messages("pt").lang, "en");
        assert_eq!(messages("").lang, "en");
    }
}
