//! The OpenAPI 3.1 document, `GET /main/openapi.json`: generated from the
//! handlers' `#[utoipa::path]` annotations and the request types, with the
//! error answers every route shares added once here.

use std::sync::LazyLock;

use axum::Json;
use axum::response::IntoResponse;

use utoipa::openapi::link::Link;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "DWP main-service", description = "HITL approvals over Redis, AgentTask persistence, login."),
    paths(
        crate::health::health,
        crate::health::ready,
        crate::health::info,
        crate::actuator::health,
        crate::actuator::readiness,
        crate::actuator::liveness,
        crate::login::login,
        crate::signin::policy,
        crate::signin::idp,
        crate::signin::me,
        crate::signin::permissions,
        crate::signin::menus,
        crate::monitoring::page_view,
        crate::monitoring::event,
        crate::hitl::approve,
        crate::hitl::reject,
        crate::hitl::create::create,
        crate::hitl::inbox::list,
        crate::hitl::feed::events,
        crate::hitl::read_request,
        crate::hitl::read_signal,
        crate::tasks::api::create,
        crate::tasks::api::list,
        crate::tasks::api::read,
        crate::tasks::api::start,
        crate::tasks::api::progress,
        crate::tasks::api::complete,
        crate::tasks::api::fail,
        crate::tasks::api::plan_step,
    ),
    modifiers(&Shared)
)]
struct ApiDoc;

/// The bearer scheme and the error answers of every operation.
struct Shared;

/// Status, what it means; each in the envelope with an `errorCode`.
const ERRORS: [(&str, &str); 7] = [
    (
        "400",
        "Invalid input (E1001) or a move the task cannot make (E3002)",
    ),
    (
        "401",
        "Missing, expired or invalid token (E2000, E2002, E2003)",
    ),
    (
        "403",
        "The token does not match the identity headers or the owner (E2001)",
    ),
    ("404", "Not found, or another user's (E1004)"),
    ("413", "Body over the limit (E1001)"),
    ("415", "A body that is not application/json (E1001)"),
    ("503", "Redis or PostgreSQL unreachable (E5000)"),
];

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        // `data` is any JSON (`serde_json::Value`).
        components.schemas.insert(
            "Value".to_owned(),
            RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(SchemaType::AnyValue)
                    .description(Some("Any JSON value"))
                    .build(),
            )),
        );
        add_links(openapi);
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, description) in ERRORS {
                    let error = ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Envelope")))
                                .build(),
                        )
                        .build();
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert(RefOr::T(error));
                }
            }
        }
    }
}

/// Where an id that a creating call returns is used next: (operation that
/// creates, its status, the id in its body, operations that take it, their
/// parameter). Schemathesis follows these links in its stateful phase.
const LINKS: [(&str, &str, &str, &[&str], &str); 3] = [
    (
        "/main/agent/tasks",
        "201",
        "$response.body#/data/taskId",
        &["read", "start", "progress", "complete", "fail", "plan_step"],
        "task_id",
    ),
    (
        "/aura/hitl/requests",
        "201",
        "$response.body#/data/requestId",
        &["read_request", "approve", "reject"],
        "id",
    ),
    (
        "/aura/hitl/requests",
        "201",
        "$response.body#/data/sessionId",
        &["read_signal"],
        "id",
    ),
];

fn add_links(openapi: &mut utoipa::openapi::OpenApi) {
    for (path, status, value, targets, parameter) in LINKS {
        let Some(RefOr::T(response)) = openapi
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.responses.responses.get_mut(status))
        else {
            continue;
        };
        for target in targets {
            let link = Link::builder()
                .operation_id(*target)
                .parameter(parameter, value)
                .build();
            response.links.insert(target.to_string(), RefOr::T(link));
        }
    }
}

static DOCUMENT: LazyLock<serde_json::Value> = LazyLock::new(|| {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    fix_link_keys(&mut document);
    any_error_data(&mut document);
    document
});

/// The error envelope's `data` is any JSON, null included: utoipa writes
/// `Option<Value>` as "null or any", which a null matches twice.
fn any_error_data(document: &mut serde_json::Value) {
    if let Some(data) = document.pointer_mut("/components/schemas/Envelope/properties/data") {
        *data = serde_json::json!({"description": "Null, or the current state on a 409"});
    }
}

/// utoipa 5.5 writes a link's `operationId` as `operation_id`; OpenAPI
/// readers (schemathesis among them) need the camelCase name.
fn fix_link_keys(document: &mut serde_json::Value) {
    let Some(paths) = document.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(|l| l.as_object_mut()))
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        if let Some(id) = link.remove("operation_id") {
            link.insert("operationId".to_owned(), id);
        }
    }
}

/// `GET /main/openapi.json`.
pub async fn document() -> impl IntoResponse {
    Json(DOCUMENT.clone())
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    /// The schema an operation's 200 or 201 answer has for `data`.
    fn data_of(path: &str, method: &str) -> &'static serde_json::Value {
        let responses = &DOCUMENT["paths"][path][method]["responses"];
        let ok = if responses["201"].is_object() {
            "201"
        } else {
            "200"
        };
        let reference = responses[ok]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_default();
        let name = reference.rsplit('/').next().unwrap_or_default();
        &DOCUMENT["components"]["schemas"][name]["properties"]["data"]
    }

    #[test]
    fn answers_are_described_by_their_types_not_as_any_json() {
        let task = data_of("/main/agent/tasks/{task_id}", "get");
        assert!(
            task["required"]
                .as_array()
                .unwrap()
                .contains(&"taskId".into()),
            "{task}"
        );
        let page = data_of("/main/agent/tasks", "get");
        assert!(page["properties"]["content"].is_object(), "{page}");
        let created = data_of("/aura/hitl/requests", "post");
        assert!(created["properties"]["sessionId"].is_object(), "{created}");
        let login = data_of("/auth/login", "post");
        assert!(login["properties"]["accessToken"].is_object(), "{login}");
        let me = data_of("/auth/me", "get");
        assert!(me["properties"]["tenantId"].is_object(), "{me}");
    }

    #[test]
    fn required_body_fields_are_required_by_the_type() {
        let schemas = &DOCUMENT["components"]["schemas"];
        for (body, field) in [
            ("NewTask", "taskType"),
            ("NewRequest", "sessionId"),
            ("NewRequest", "actionType"),
            ("Login", "password"),
            ("Progress", "progress"),
            ("Failure", "errorMessage"),
        ] {
            let required = schemas[body]["required"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                required.contains(&field.into()),
                "{body}.{field}: {required:?}"
            );
        }
    }
}
