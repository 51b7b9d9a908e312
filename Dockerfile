# syntax=docker/dockerfile:1
# Preaviso worker image: `docker run preaviso` starts the Faust worker,
# `docker run preaviso <command>` runs any other CLI command.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A virtualenv keeps the install in one folder the runtime stage copies whole,
# leaving pip's build leftovers behind.
RUN python -m venv /opt/preaviso
WORKDIR /src
COPY pyproject.toml README.md ./
COPY preaviso ./preaviso
RUN /opt/preaviso/bin/pip install .


FROM python:3.11-slim

ENV PATH=/opt/preaviso/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PREAVISO_DATA_DIR=/var/lib/preaviso/data

# Fixed ids so a bind-mounted data dir can be chown'ed to match on the host.
RUN groupadd --system --gid 10001 preaviso \
    && useradd --system --uid 10001 --gid preaviso --home-dir /var/lib/preaviso \
        --shell /usr/sbin/nologin preaviso \
    && install -d -o preaviso -g preaviso -m 0750 /var/lib/preaviso /var/lib/preaviso/data

COPY --from=build /opt/preaviso /opt/preaviso

# The worker's RocksDB tables live here; a named volume inherits the ownership above.
VOLUME ["/var/lib/preaviso"]
# Settings read an optional .env from the working directory: keep it the data home,
# never the source tree.
WORKDIR /var/lib/preaviso
USER preaviso:preaviso

ENTRYPOINT ["preaviso"]
CMD ["worker"]
