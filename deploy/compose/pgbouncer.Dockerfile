# PgBouncer from the PostgreSQL project's apt repository (already configured
# in the official postgres image): needs >= 1.24 for load_balance_hosts.
FROM postgres:17-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends pgbouncer \
 && rm -rf /var/lib/apt/lists/*
USER postgres
EXPOSE 6432
ENTRYPOINT ["pgbouncer"]
CMD ["/etc/pgbouncer/pgbouncer.ini"]
