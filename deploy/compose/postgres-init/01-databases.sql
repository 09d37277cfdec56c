-- Run once by the postgres image on an empty data volume: one database per service.
CREATE DATABASE lt_quota;
CREATE DATABASE lt_saga;
CREATE DATABASE lt_analytics;
CREATE DATABASE lt_notifier;
