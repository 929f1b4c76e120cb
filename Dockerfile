# syntax=docker/dockerfile:1
#
# mpcache in a container: the first stage builds the wheel (C engine and
# all), the second installs it into a slim Python without a compiler and
# runs it as an unprivileged user.
#
#   docker build -t mpcache .
#   docker run -d --name mpcache -p 11211:11211 -p 9150:9150 mpcache
#   docker run -d -p 11211:11211 mpcache -l 0.0.0.0 -m 1024 -t 2    # your own flags
#
# io_uring: Docker's default seccomp profile denies io_uring_setup, and
# mpcache then serves on epoll by itself (stats: mpcache_io_engine epoll).
# To allow io_uring, run with a profile that permits io_uring_setup,
# io_uring_enter and io_uring_register, or --security-opt seccomp=unconfined.
# See README, "Docker".

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads: a change to tests or docs keeps the cache.
COPY pyproject.toml setup.py README.md ./
COPY ext ./ext
COPY mpcache ./mpcache
# The wheels of mpcache and of its metrics extra (prometheus-client).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[metrics]"

FROM python:${PYTHON_VERSION}-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# A fixed uid, so volume and policy rules (runAsNonRoot) can name it.
RUN useradd --system --uid 10211 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin mpcache
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "mpcache[metrics]"
USER 10211:10211
# 11211: the memcached protocol; 9150: /metrics (memcached_exporter's port).
EXPOSE 11211 9150
# "version" on the cache port, as a client would ask it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import socket,sys; s=socket.create_connection(('127.0.0.1',11211),2); s.sendall(b'version\\r\\n'); sys.exit(0 if s.recv(64).startswith(b'VERSION ') else 1)"]
ENTRYPOINT ["mpcache"]
# Inside a container the published port is the way in, so listen on every
# interface of the container's own network namespace.
CMD ["-p", "11211", "-l", "0.0.0.0", "-m", "64", "--metrics-listen", "0.0.0.0:9150"]
