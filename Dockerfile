# ollamalike on the CPU in a container: `docker build -t ollamalike .` then
#   docker run -d -p 11434:11434 -v ollamalike:/models --name ollamalike ollamalike
#   docker exec -it ollamalike ollamalike run smollm2:135m "Why is the sky blue?"
# llama.cpp is compiled for the building machine's instruction sets (install.sh's portable flags, never
# AMX): run the image on the same kind of CPU, or build it where it will run.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/ollamalike
COPY . .
# the virtual environment and llama-cpp-python; the starter model comes at first run (`ollamalike pull`)
RUN OLLAMALIKE_BIN_DIR=/usr/local/bin ./install.sh --no-model && rm -rf /root/.cache/pip

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd -r -U -m -d /home/ollamalike ollamalike && mkdir /models && chown ollamalike:ollamalike /models
COPY --from=build /opt/ollamalike /opt/ollamalike
RUN ln -s /opt/ollamalike/.venv/bin/ollamalike /usr/local/bin/ollamalike && ollamalike --version
USER ollamalike
ENV OLLAMALIKE_HOST=0.0.0.0:11434 OLLAMALIKE_MODELS=/models
VOLUME /models
EXPOSE 11434
ENTRYPOINT ["ollamalike"]
CMD ["serve"]
