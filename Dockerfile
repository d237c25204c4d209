# The custos image: the one static binary and nothing else. FROM scratch
# pulls no image; build the binary first (CGO_ENABLED=0 makes it static),
# then the image, from the repository root:
#
#   CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o custos ./cmd/custos
#   docker build -t custos .
#
# and run any subcommand, for example the dev chain for other containers:
#
#   docker run --rm -p 127.0.0.1:8545:8545 custos devchain --listen 0.0.0.0:8545 --allow-remote
FROM scratch
# WORKDIR makes the directories, which scratch lacks: go-ethereum's
# in-memory dev chain needs a /tmp; /data is where configurations and
# stores go (mount a volume there).
WORKDIR /tmp
WORKDIR /data
COPY custos /custos
ENTRYPOINT ["/custos"]
CMD ["help"]
