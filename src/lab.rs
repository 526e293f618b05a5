//! Local PostgreSQL HA lab: primary + streaming standby, failovers.
