//! What the web frontend's pages report (`POST /monitoring/page-view` and
//! `/monitoring/event`): every page view and event as sent, with who sent it
//! and from where, and a count of views per page and day. Rows are removed
//! by age (`MONITORING_RETENTION_DAYS`); the `created_at` and `day` indexes
//! make that a range delete.

use sea_orm_migration::prelude::*;

/// Creates (or drops) the three tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r"
CREATE TABLE monitoring_page_view (
  id bigserial PRIMARY KEY,
  tenant_id varchar(50) NOT NULL,
  user_id varchar(255),
  visitor_id varchar(255),
  path varchar(500) NOT NULL,
  page_key varchar(500) NOT NULL,
  title varchar(200),
  device varchar(50),
  referrer varchar(500),
  metadata jsonb,
  client_addr varchar(64) NOT NULL,
  user_agent varchar(500),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_monitoring_page_view_created ON monitoring_page_view (created_at);
CREATE INDEX idx_monitoring_page_view_tenant ON monitoring_page_view (tenant_id, created_at);

CREATE TABLE monitoring_event (
  id bigserial PRIMARY KEY,
  tenant_id varchar(50) NOT NULL,
  user_id varchar(255),
  visitor_id varchar(255),
  resource_key varchar(255) NOT NULL,
  action varchar(50) NOT NULL,
  label varchar(200),
  path varchar(500),
  metadata jsonb,
  client_addr varchar(64) NOT NULL,
  user_agent varchar(500),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_monitoring_event_created ON monitoring_event (created_at);
CREATE INDEX idx_monitoring_event_tenant ON monitoring_event (tenant_id, created_at);

CREATE TABLE monitoring_page_daily (
  tenant_id varchar(50) NOT NULL,
  day date NOT NULL,
  page_key varchar(500) NOT NULL,
  views bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, day, page_key)
);
CREATE INDEX idx_monitoring_page_daily_day ON monitoring_page_daily (day);
";

const DROP: &str = r"
DROP TABLE IF EXISTS monitoring_page_daily;
DROP TABLE IF EXISTS monitoring_event;
DROP TABLE IF EXISTS monitoring_page_view;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(CREATE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DROP).await?;
        Ok(())
    }
}
