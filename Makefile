# p2twisted: the two commands a newcomer types are `make demo` and `make test`.
# Both create .venv and install what they need.  As root with apt-get, `make test`
# also installs the system packages the real-server tests use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRIAL_JOBS ?= 2
# apt-get waits (up to 5 minutes) for another apt or dpkg to finish rather than
# failing at once.  `apt-get update` ignores DPkg::Lock::Timeout (apt 2.6), so
# APT_UPDATE retries it while another apt holds the package lists' lock.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300
APT_UPDATE := i=0; until out=$$($(APT_GET) update 2>&1); do \
	  case "$$out" in *"Could not get lock"*) [ $$i -lt 60 ] || { echo "$$out" >&2; exit 1; }; \
	    [ $$i -gt 0 ] || echo "waiting for another apt to finish"; i=$$((i+1)); sleep 5;; \
	  *) echo "$$out" >&2; exit 1;; esac; done

.PHONY: demo demo-stop test test-quick bench sysdeps clean

$(STAMP): setup.py
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing python3-venv (needed to create $(VENV))"; \
	    $(APT_UPDATE); $(APT_GET) install -y python3-venv >/dev/null; \
	  else echo "error: $(PYTHON) cannot create virtualenvs; install python3-venv (e.g. sudo apt-get install python3-venv)" >&2; exit 1; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

# Install the servers the integration tests run for real, when we can (root + apt-get).
# Without them those tests skip with a reason (or fail under P2_REQUIRE_REAL_SERVERS=1).
sysdeps:
	@missing=""; \
	[ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null || missing="$$missing zookeeper"; \
	command -v runsvdir >/dev/null || missing="$$missing runit"; \
	command -v gpg >/dev/null || missing="$$missing gnupg"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	command -v busybox >/dev/null || missing="$$missing busybox"; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v gnutls-serv >/dev/null || missing="$$missing gnutls-bin"; \
	command -v cc >/dev/null || missing="$$missing gcc libc6-dev"; \
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    $(APT_UPDATE); $(APT_GET) install -y $$missing >/dev/null; \
	  else echo "note: missing$$missing; the tests needing them will skip (install as root: apt-get install$$missing)"; fi; \
	fi

test: $(STAMP) sysdeps
	$(BIN)/python -m twisted.trial -j$(TRIAL_JOBS) tests

test-quick: $(STAMP)
	$(BIN)/python -m twisted.trial tests.test_store_memory tests.test_manifest tests.test_labels

bench: $(STAMP) sysdeps
	$(BIN)/python bench/store.py
	$(BIN)/python bench/deploy_latency.py
	$(BIN)/python bench/install_throughput.py
	$(BIN)/python bench/cli_start.py
	$(BIN)/python bench/ansible_compare.py
	$(BIN)/python bench/fleet.py

# The demo: an agent on the embedded store, a static site and a Python WSGI app
# deployed and answering.  Pods run under runit as root, in the agent otherwise.
# As root the pods run as their own users (web, hello), who must reach the
# demo's directory: .demo in the checkout, or, when the checkout is in a
# private directory (e.g. root's home), /var/tmp/p2-demo-<hash of its path>.
DEMO := $(shell d='$(CURDIR)'; \
	if [ "$$(id -u)" = 0 ]; then while [ "$$d" != / ]; do \
	  [ -n "$$(find "$$d" -maxdepth 0 -perm -o=x)" ] || { \
	    echo /var/tmp/p2-demo-$$(printf %s '$(CURDIR)' | md5sum | cut -c1-8); exit; }; \
	  d=$$(dirname "$$d"); done; fi; echo '$(CURDIR)/.demo')
P2DEMO := P2_STATE_DIR=$(DEMO)/state $(BIN)/p2
SUP := $$(command -v runsvdir >/dev/null && [ "$$(id -u)" = 0 ] && echo runit || echo builtin)

demo: $(STAMP)
	@[ "$(DEMO)" = "$(CURDIR)/.demo" ] || echo "demo directory: $(DEMO) (the pods' users cannot reach $(CURDIR))"
	@mkdir -p -m 755 $(DEMO) $(DEMO)/www $(DEMO)/app
	@echo '<h1>Hello from p2</h1>' > $(DEMO)/www/index.html
	@cp p2twisted/templates/files/demo_hello.py $(DEMO)/app/
	@chmod 644 $(DEMO)/www/index.html $(DEMO)/app/demo_hello.py
	$(P2DEMO) start --node demo --supervisor $(SUP)
	$(P2DEMO) add web --template static --port 18080 --directory $(DEMO)/www --force
	$(P2DEMO) deploy web --node demo --wait --timeout 120
	$(P2DEMO) add hello --template python --port 18081 --path $(DEMO)/app --wsgi demo_hello:application --force
	$(P2DEMO) deploy hello --node demo --wait --timeout 300
	$(P2DEMO) status
	@echo "Look: curl http://127.0.0.1:18080/ and :18081/, or P2_STATE_DIR=$(patsubst $(CURDIR)/%,%,$(DEMO))/state .venv/bin/p2 status (logs web, run hello packages); stop everything: make demo-stop"

demo-stop: $(STAMP)
	@# The agent removes the pods, so it must be running while they are undeployed.
	$(P2DEMO) start --node demo --supervisor $(SUP)
	-$(P2DEMO) undeploy web --wait --timeout 30
	-$(P2DEMO) undeploy hello --wait --timeout 30
	-$(P2DEMO) stop-agent

clean:
	rm -rf $(VENV) _trial_temp* .demo $(DEMO) build dist *.egg-info
