"""
Tests for L{p2twisted.manifest}: parsing, validation, the canonical form and
its SHA-256.
"""

import copy
import hashlib
import os
import subprocess
import sys

import yaml
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from p2twisted.errors import ManifestError
from p2twisted.manifest import (
    DEFAULT_ENTRY_POINTS, Status, Version, launchableVersion, manifestSHA, parseManifest)

WEB_URL = "https://artifacts.example.com/web_3c021aff048ca8117593f9c71e03b87cf72fd440.tar.gz"

#: P2's example manifest (reference/p2.md section 3).
FULL = b"""\
id: billing-api
run_as: billing
termination_grace_period: 300
status: {port: 8443, http: false, path: /_status, localhost_only: false}
resource_limits: {cgroup: {cpus: 4, memory: 4G}}
labels: {team: billing}
launchables:
  web:
    launchable_type: hoist
    location: https://artifacts.example.com/web_3c021aff048ca8117593f9c71e03b87cf72fd440.tar.gz
    digest_location: https://artifacts.example.com/web_3c02.sha256sums
    digest_signature_location: https://artifacts.example.com/web_3c02.sha256sums.sig
    entry_points: [bin/launch, bin/worker]
    restart_timeout: 30s
    restart_policy: always
    env: {JAVA_OPTS: "-Xmx1g"}
    cgroup: {cpus: 2, memory: 2G}
  migrator:
    launchable_type: hoist
    version: {id: 9f1e0c2a7b3d4e5f60718293a4b5c6d7e8f90123, artifact_name: billing-migrator,
              tags: {channel: stable}}
    restart_policy: never
config:
  ENVIRONMENT: production
  db: {host: db1.example.com, pool: 20}
"""

#: The smallest valid manifest, as data.
MINIMAL = {
    "id": "web-pod",
    "launchables": {"web": {"launchable_type": "hoist", "location": WEB_URL}},
}


def manifestYAML(**fields):
    """
    @return: L{MINIMAL} as YAML bytes, with top-level C{fields} set (or
        removed, for the value C{Ellipsis}).
    """
    document = copy.deepcopy(MINIMAL)
    document.update(fields)
    return yaml.safe_dump({k: v for k, v in document.items() if v is not Ellipsis}).encode()


def launchableYAML(**fields):
    """
    @return: L{MINIMAL} as YAML bytes, with C{fields} of its launchable set
        (or removed, for the value C{Ellipsis}).
    """
    stanza = dict(MINIMAL["launchables"]["web"], **fields)
    stanza = {k: v for k, v in stanza.items() if v is not Ellipsis}
    return manifestYAML(launchables={"web": stanza})


def sign(text, signature=b"iQEzBAEBCAAdFiEEabc\n=XyZ1\n"):
    """
    @return: C{text} in a PGP clear-signature wrapper, dash-escaped.
    """
    escaped = b"".join(b"- " + line if line.startswith(b"-") else line
                       for line in text.splitlines(True))
    return (b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + escaped
            + b"-----BEGIN PGP SIGNATURE-----\n\n" + signature + b"-----END PGP SIGNATURE-----\n")


class ParseTests(SynchronousTestCase):
    """
    Valid manifests become L{PodManifest}s.
    """

    def test_full(self):
        """
        Every field of P2's example manifest is parsed and normalized.
        """
        m = parseManifest(FULL, source="billing.yaml")
        self.assertEqual((m.id, m.runAs, m.terminationGracePeriod), ("billing-api", "billing", 300))
        self.assertEqual(m.status, Status(port=8443, http=False, path="/_status",
                                          localhostOnly=False))
        self.assertEqual(m.resourceLimits, {"cgroup": {"cpus": 4.0, "memory": 4 * 2 ** 30}})
        self.assertEqual(m.labels, {"team": "billing"})
        self.assertEqual(m.config, {"ENVIRONMENT": "production",
                                    "db": {"host": "db1.example.com", "pool": 20}})
        self.assertEqual(list(m.launchables), ["web", "migrator"])
        web = m.launchables["web"]
        self.assertEqual(
            (web.id, web.launchableType, web.location, web.version, web.digest),
            ("web", "hoist", WEB_URL, None, None))
        self.assertEqual(web.digestLocation, "https://artifacts.example.com/web_3c02.sha256sums")
        self.assertEqual(web.digestSignatureLocation,
                         "https://artifacts.example.com/web_3c02.sha256sums.sig")
        self.assertEqual(web.entryPoints, ("bin/launch", "bin/worker"))
        self.assertEqual((web.restartPolicy, web.restartTimeout), ("always", 30.0))
        self.assertEqual(web.env, {"JAVA_OPTS": "-Xmx1g"})
        self.assertEqual(web.cgroup, {"cpus": 2.0, "memory": 2 * 2 ** 30})
        self.assertIs(web.noHaltOnUpdate, False)
        migrator = m.launchables["migrator"]
        self.assertEqual(migrator.version, Version(
            id="9f1e0c2a7b3d4e5f60718293a4b5c6d7e8f90123", artifactName="billing-migrator",
            tags={"channel": "stable"}))
        self.assertEqual((migrator.location, migrator.restartPolicy), (None, "never"))
        self.assertEqual((m.warnings, m.raw, m.signature, m.signedBody), ((), FULL, None, None))

    def test_defaults(self):
        """
        Omitted fields get P2's defaults.
        """
        m = parseManifest(manifestYAML())
        self.assertEqual(m.runAs, "web-pod")
        self.assertEqual((m.config, m.labels, m.resourceLimits), ({}, {}, {}))
        self.assertEqual(m.status, Status(port=None, http=False, path="/_status",
                                          localhostOnly=False))
        self.assertEqual(m.terminationGracePeriod, 3600)
        web = m.launchables["web"]
        self.assertEqual(web.entryPoints, DEFAULT_ENTRY_POINTS)
        self.assertEqual(web.entryPoints, ("bin/launch",))
        self.assertEqual((web.restartPolicy, web.restartTimeout), ("always", 60.0))
        self.assertEqual((web.env, web.cgroup, web.noHaltOnUpdate), ({}, None, False))
        self.assertEqual((web.digest, web.digestLocation, web.digestSignatureLocation),
                         (None, None, None))

    def test_nullIsAbsent(self):
        """
        A field with a null value is the same as an absent one.
        """
        data = (b"id: web-pod\nconfig:\nlabels:\nstatus:\nlaunchables:\n  web:\n"
                b"    launchable_type: hoist\n    location: " + WEB_URL.encode()
                + b"\n    env:\n    restart_policy:\n    entry_points: []\n")
        self.assertEqual(parseManifest(data).canonical(), parseManifest(manifestYAML()).canonical())

    def test_durations(self):
        """
        C{restart_timeout} takes Go durations and numbers of seconds.
        """
        cases = {"30s": 30.0, "1m30s": 90.0, "500ms": 0.5, "1.5h": 5400.0, "0": 0.0,
                 "2h45m0.5s": 9900.5, "1500us": 0.0015, 10: 10.0, 0.25: 0.25}
        for spelling, seconds in cases.items():
            m = parseManifest(launchableYAML(restart_timeout=spelling))
            self.assertEqual(m.launchables["web"].restartTimeout, seconds, spelling)

    def test_memory(self):
        """
        Memory sizes take K, M, G and T suffixes (powers of 1024), or bytes.
        """
        cases = {"1024K": 2 ** 20, "512M": 512 * 2 ** 20, "2G": 2 ** 31, "1T": 2 ** 40,
                 "2g": 2 ** 31, "4096": 4096, 4096: 4096}
        for spelling, size in cases.items():
            m = parseManifest(launchableYAML(cgroup={"memory": spelling}))
            self.assertEqual(m.launchables["web"].cgroup, {"memory": size}, spelling)

    def test_legacyStatus(self):
        """
        The legacy C{status_port} and C{status_http} fields set the status.
        """
        m = parseManifest(manifestYAML(status_port=8080, status_http=True))
        self.assertEqual(m.status, Status(port=8080, http=True))

    def test_textSpelling(self):
        """
        Unquoted numbers and booleans where text is expected keep their
        source spelling, as in P2.
        """
        data = (b"id: web-pod\nlabels: {release: 2}\nlaunchables:\n  web:\n"
                b"    launchable_type: hoist\n    version: {id: 1234, artifact_name: web}\n"
                b"    env: {VERSION: 1.10, DEBUG: yes, MODE: 0755, COUNT: 3, QUIET: false}\n")
        m = parseManifest(data)
        web = m.launchables["web"]
        self.assertEqual(web.env, {"VERSION": "1.10", "DEBUG": "yes", "MODE": "0755",
                                   "COUNT": "3", "QUIET": "false"})
        self.assertEqual(web.version.id, "1234")
        self.assertEqual(m.labels, {"release": "2"})

    def test_configDataKept(self):
        """
        Config keeps YAML types, but dates stay text, as in P2.
        """
        m = parseManifest(manifestYAML(config={"n": 1, "f": 1.5, "b": True, "z": None,
                                               "l": [1, "a"]}))
        self.assertEqual(m.config, {"n": 1, "f": 1.5, "b": True, "z": None, "l": [1, "a"]})
        m = parseManifest(b"config: {day: 2020-01-02}\n" + manifestYAML(config=Ellipsis))
        self.assertEqual(m.config, {"day": "2020-01-02"})

    def test_aliases(self):
        """
        YAML anchors, aliases and merge keys work.
        """
        data = (b"id: web-pod\nlaunchables:\n  web: &base\n    launchable_type: hoist\n"
                b"    location: " + WEB_URL.encode() + b"\n    env: {V: 1.10}\n"
                b"  worker:\n    <<: *base\n    restart_policy: never\n")
        m = parseManifest(data)
        self.assertEqual(m.launchables["worker"].location, WEB_URL)
        self.assertEqual(m.launchables["worker"].env, {"V": "1.10"})
        self.assertEqual(m.launchables["worker"].restartPolicy, "never")

    def test_entryPointsNormalized(self):
        """
        Entry points are normalized relative paths.
        """
        m = parseManifest(launchableYAML(entry_points=["./bin/launch", "bin//worker/"]))
        self.assertEqual(m.launchables["web"].entryPoints, ("bin/launch", "bin/worker"))

    def test_digest(self):
        """
        An inline digest is kept in lower case.
        """
        m = parseManifest(launchableYAML(digest="AB" * 32))
        self.assertEqual(m.launchables["web"].digest, "ab" * 32)

    def test_configYAML(self):
        """
        C{configYAML} is the config map as YAML, for C{CONFIG_PATH}.
        """
        m = parseManifest(FULL)
        self.assertEqual(yaml.safe_load(m.configYAML()), m.config)
        self.assertEqual(parseManifest(manifestYAML()).configYAML(), b"{}\n")

    def test_sourceInErrors(self):
        """
        The source given is named by the error.
        """
        error = self.assertRaises(ManifestError, parseManifest, b"id: x\n", source="pod.yaml")
        self.assertEqual(error.source, "pod.yaml")
        self.assertEqual(str(error), "pod.yaml: launchables: required")


class ValidationTests(SynchronousTestCase):
    """
    Invalid manifests raise L{ManifestError} listing every problem, each
    C{field.path: problem}.
    """

    def problems(self, data):
        return self.assertRaises(ManifestError, parseManifest, data).problems

    def assertProblem(self, data, problem):
        self.assertEqual(self.problems(data), [problem])

    def test_idRequired(self):
        """
        C{id} is required.
        """
        self.assertProblem(manifestYAML(id=Ellipsis), "id: required")

    def test_idCharacters(self):
        """
        C{id} must be a store key segment.
        """
        for bad in ("a/b", "a b", "..", ""):
            self.assertProblem(manifestYAML(id=bad, run_as="web"),
                               "id: expected a name of letters, digits, '.', '_', ':' and '-', "
                               "got %r" % (bad,))

    def test_idType(self):
        """
        Wrong types say what was expected and what was got.
        """
        self.assertProblem(manifestYAML(id=["a"]), "id: expected a string, got a list")

    def test_runAs(self):
        """
        C{run_as} must be a usable user name.
        """
        self.assertProblem(
            manifestYAML(run_as="9lives"),
            "run_as: expected a unix user name (a letter or '_', then letters, digits, '_', "
            "'.' or '-'; at most 32), got '9lives'")

    def test_launchablesRequired(self):
        """
        C{launchables} is required and must not be empty.
        """
        self.assertProblem(manifestYAML(launchables=Ellipsis), "launchables: required")
        self.assertProblem(manifestYAML(launchables={}),
                           "launchables: expected at least one launchable")
        self.assertProblem(manifestYAML(launchables=["web"]),
                           "launchables: expected a mapping, got a list")

    def test_idsKeepServiceNamesApart(self):
        """
        Pod and launchable ids may not contain C{__} or start or end with
        C{_}: service names join them with C{__}, and C{app} would otherwise
        see the services of C{app__canary} (or C{app_}) as its own.
        """
        stanza = MINIMAL["launchables"]["web"]
        for bad in ("app__canary", "app_", "_app"):
            self.assertProblem(
                manifestYAML(id=bad),
                "id: '%s' must not contain '__' or start or end with '_' (service names "
                "join ids with '__')" % (bad,))
            self.assertProblem(
                manifestYAML(launchables={bad: stanza}),
                "launchables.%s: '%s' must not contain '__' or start or end with '_' "
                "(service names join ids with '__')" % (bad, bad))
        parseManifest(manifestYAML(id="a_b-c.d", launchables={"x_y": stanza}))

    def test_launchableId(self):
        """
        Launchable ids must be key segments.
        """
        stanza = MINIMAL["launchables"]["web"]
        self.assertProblem(
            manifestYAML(launchables={"we b": stanza}),
            "launchables.'we b': expected a name of letters, digits, '.', '_', ':' and '-', "
            "got 'we b'")
        self.assertProblem(
            b"id: x\nlaunchables: {1: {launchable_type: hoist, location: 'http://a/b'}}",
            "launchables: launchable ids must be strings, got integer 1")

    def test_launchableType(self):
        """
        C{launchable_type} is required, and only hoist is supported.
        """
        self.assertProblem(launchableYAML(launchable_type=Ellipsis),
                           "launchables.web.launchable_type: required")
        self.assertProblem(
            launchableYAML(launchable_type="docker"),
            "launchables.web.launchable_type: expected a supported launchable type (hoist), "
            "got 'docker'")

    def test_locationOrVersion(self):
        """
        A launchable needs exactly one of C{location} or C{version}.
        """
        version = {"id": "abc", "artifact_name": "web"}
        self.assertProblem(launchableYAML(version=version),
                           "launchables.web: needs exactly one of location or version, got both")
        self.assertProblem(launchableYAML(location=Ellipsis),
                           "launchables.web: needs exactly one of location or version, "
                           "got neither")

    def test_location(self):
        """
        C{location} must be an http, https or file URL, or (as in P2) a file
        path without a scheme, absolute or relative.
        """
        for bad in ("ftp://a/b", "http://", "http://a/b c", "//host/web.tar.gz", "a\tb"):
            self.assertProblem(launchableYAML(location=bad),
                               "launchables.web.location: expected an http, https or file URL "
                               "or a file path, got %r" % (bad,))
        for good in ("web_1.tar.gz", "/srv/artifacts/web_1.tar.gz", "builds/web_1.tar.gz"):
            m = parseManifest(launchableYAML(location=good))
            self.assertEqual(m.launchables["web"].location, good)

    def test_pathLocationSHA(self):
        """
        A path location is kept as written: the canonical SHA differs from
        that of the same file as a C{file://} URL, as the two texts differ.
        """
        self.assertNotEqual(parseManifest(launchableYAML(location="/a/web_1.tar.gz")).sha(),
                            parseManifest(launchableYAML(location="file:///a/web_1.tar.gz")).sha())

    def test_version(self):
        """
        A C{version} stanza needs C{id}; tags are text.
        """
        self.assertEqual(
            self.problems(launchableYAML(location=Ellipsis, version={"tags": {"a": [1]}})),
            ["launchables.web.version.id: required",
             "launchables.web.version.tags.a: expected a string, got a list"])

    def test_versionArtifactNameDefault(self):
        """
        Without C{artifact_name} the artifact is named by the launchable id,
        as P2's C{ArtifactOverride}; the canonical form (and SHA) is that of
        the manifest naming it explicitly.
        """
        implicit = parseManifest(launchableYAML(location=Ellipsis, version={"id": "abc"}))
        explicit = parseManifest(launchableYAML(location=Ellipsis,
                                                version={"id": "abc", "artifact_name": "web"}))
        self.assertEqual(implicit.launchables["web"].version.artifactName, "web")
        self.assertEqual(implicit.sha(), explicit.sha())
        other = parseManifest(launchableYAML(location=Ellipsis,
                                             version={"id": "abc", "artifact_name": "api"}))
        self.assertEqual(other.launchables["web"].version.artifactName, "api")
        self.assertProblem(launchableYAML(location=Ellipsis, version="1.0"),
                           "launchables.web.version: expected a mapping, got string '1.0'")

    def test_digests(self):
        """
        C{digest} is 64 hex digits, and excludes C{digest_location}; a
        signature location needs a digest location.
        """
        self.assertProblem(launchableYAML(digest="abc"),
                           "launchables.web.digest: expected a SHA-256 of 64 hex digits, "
                           "got 'abc'")
        self.assertProblem(
            launchableYAML(digest="a" * 64, digest_location="https://a/b.sha256sums"),
            "launchables.web: takes at most one of digest or digest_location, got both")
        self.assertProblem(
            launchableYAML(digest_signature_location="https://a/b.sig"),
            "launchables.web.digest_signature_location: needs digest_location")

    def test_entryPoints(self):
        """
        Entry points are relative paths inside the launchable.
        """
        for bad in ("/bin/launch", "../launch", "bin/../../x", ".", ""):
            self.assertProblem(
                launchableYAML(entry_points=[bad]),
                "launchables.web.entry_points[0]: expected a relative path inside the "
                "launchable, without '..', got %r" % (bad,))
        self.assertProblem(launchableYAML(entry_points="bin/launch"),
                           "launchables.web.entry_points: expected a list of relative paths, "
                           "got string 'bin/launch'")
        self.assertProblem(launchableYAML(entry_points=["bin/a", "./bin/a"]),
                           "launchables.web.entry_points[1]: 'bin/a' is listed twice")

    def test_restartPolicy(self):
        """
        C{restart_policy} is always or never.
        """
        self.assertProblem(launchableYAML(restart_policy="sometimes"),
                           "launchables.web.restart_policy: expected always or never, "
                           "got 'sometimes'")

    def test_restartTimeout(self):
        """
        C{restart_timeout} is a non-negative duration.
        """
        what = "a duration like 30s, 1m30s or 500ms, or a number of seconds"
        for bad in ("-5s", "5 s", "5d", "s", "1e3s", ""):
            self.assertProblem(launchableYAML(restart_timeout=bad),
                               "launchables.web.restart_timeout: expected %s, got %r"
                               % (what, bad))
        self.assertProblem(launchableYAML(restart_timeout=-1),
                           "launchables.web.restart_timeout: expected %s, got integer -1"
                           % (what,))
        self.assertProblem(launchableYAML(restart_timeout=True),
                           "launchables.web.restart_timeout: expected %s, got boolean true"
                           % (what,))
        self.assertProblem(launchableYAML(restart_timeout="9999999999999h"),
                           "launchables.web.restart_timeout: expected at most 9223372036 seconds")

    def test_env(self):
        """
        C{env} maps variable names to text.
        """
        self.assertEqual(
            self.problems(launchableYAML(env={"A-B": "x", "C": {"d": 1}, "E": None})),
            ["launchables.web.env.A-B: expected a variable name: letters, digits and '_', "
             "not starting with a digit",
             "launchables.web.env.C: expected a string, got a mapping",
             "launchables.web.env.E: expected a string, got null"])

    def test_cgroup(self):
        """
        A cgroup has CPUs above 0 and memory above 0 bytes.
        """
        memory = "a number of bytes above 0, or a size like 512M, 2G, 1024K or 1T"
        self.assertEqual(
            self.problems(launchableYAML(cgroup={"cpus": 0, "memory": "2GB"})),
            ["launchables.web.cgroup.cpus: expected a number of CPUs above 0, got integer 0",
             "launchables.web.cgroup.memory: expected %s, got '2GB'" % (memory,)])
        self.assertProblem(launchableYAML(cgroup={"memory": 0}),
                           "launchables.web.cgroup.memory: expected %s, got integer 0" % (memory,))
        self.assertProblem(manifestYAML(resource_limits={"cgroup": {"cpus": "two"}}),
                           "resource_limits.cgroup.cpus: expected a number of CPUs above 0, "
                           "got string 'two'")

    def test_noHaltOnUpdate(self):
        """
        C{no_halt_on_update} is a boolean.
        """
        self.assertProblem(launchableYAML(no_halt_on_update="no"),
                           "launchables.web.no_halt_on_update: expected true or false, "
                           "got string 'no'")

    def test_status(self):
        """
        The status port is 1-65535, its path starts with C{/}, and legacy
        fields must agree with the status stanza.
        """
        self.assertEqual(
            self.problems(manifestYAML(status={"port": 70000, "path": "status", "http": "yes"})),
            ["status.port: expected a port number from 1 to 65535, got integer 70000",
             "status.http: expected true or false, got string 'yes'",
             "status.path: expected a URL path starting with '/', got 'status'"])
        self.assertProblem(manifestYAML(status={"port": 80}, status_port=81),
                           "status_port: conflicts with status.port; keep only status.port")
        self.assertProblem(manifestYAML(status_port="80"),
                           "status_port: expected a port number, got string '80'")

    def test_terminationGracePeriod(self):
        """
        C{termination_grace_period} is a whole non-negative number of seconds.
        """
        self.assertProblem(
            manifestYAML(termination_grace_period=-1),
            "termination_grace_period: expected a whole number of seconds from 0 to "
            "9223372036854775807, got integer -1")
        self.assertProblem(
            manifestYAML(termination_grace_period="5m"),
            "termination_grace_period: expected a whole number of seconds, got string '5m'")

    def test_labels(self):
        """
        Labels must be valid label keys and values.
        """
        problems = self.problems(manifestYAML(labels={"a b": "x", "tier": "a b"}))
        self.assertEqual([p.split(":")[0] for p in problems], ["labels.'a b'", "labels.tier"])

    def test_config(self):
        """
        Config keys are text and values are plain data.
        """
        self.assertEqual(
            self.problems(b"config: {db: {5432: port}, raw: !!binary aGk=}\n"
                          + manifestYAML(config=Ellipsis)),
            ["config.db: keys must be strings, got integer 5432 (quote it)",
             "config.raw: expected text, a number, a boolean, null, a list or a mapping, "
             "got a bytes value"])

    def test_configAliasBomb(self):
        """
        A config that aliases expand beyond reason, or that contains itself,
        is refused quickly.
        """
        levels = [b"l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"]
        for i in range(1, 9):
            levels.append(b"l%d: &l%d [%s]\n" % (i, i, b", ".join([b"*l%d" % (i - 1,)] * 10)))
        bomb = b"config:\n" + b"".join(b"  " + level for level in levels)
        problems = self.problems(bomb + manifestYAML(config=Ellipsis))
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("config: more than 100000 values"))
        loop = b"config: &c {self: *c}\n" + manifestYAML(config=Ellipsis)
        self.assertTrue(self.problems(loop)[0].startswith("config: more than"))

    def test_everyProblem(self):
        """
        Every problem is listed, not just the first.
        """
        data = (b"run_as: 5\nstatus: {port: 0}\nlaunchables:\n"
                b"  web: {launchable_type: docker, restart_policy: sometimes, cgroup: 4}\n"
                b"  db: []\n")
        self.assertEqual(self.problems(data), [
            "id: required",
            "run_as: expected a unix user name (a letter or '_', then letters, digits, '_', "
            "'.' or '-'; at most 32), got '5'",
            "launchables.web: needs exactly one of location or version, got neither",
            "launchables.web.launchable_type: expected a supported launchable type (hoist), "
            "got 'docker'",
            "launchables.web.restart_policy: expected always or never, got 'sometimes'",
            "launchables.web.cgroup: expected a mapping, got integer 4",
            "launchables.db: expected a mapping, got a list",
            "status.port: expected a port number from 1 to 65535, got integer 0",
        ])


class GarbageTests(SynchronousTestCase):
    """
    No input gives anything but L{ManifestError}, with one-line problems.
    """

    def problems(self, data):
        problems = self.assertRaises(ManifestError, parseManifest, data).problems
        for problem in problems:
            self.assertNotIn("\n", problem)
        return problems

    def test_notAMapping(self):
        """
        The document must be a mapping.
        """
        self.assertEqual(self.problems(b"- a\n- b\n"),
                         ["manifest: expected a mapping with id and launchables, got a list"])
        self.assertEqual(self.problems(b"hello"), [
            "manifest: expected a mapping with id and launchables, got string 'hello'"])

    def test_empty(self):
        """
        An empty file, or one of comments, is an empty document.
        """
        for data in (b"", b"\n\n", b"# nothing\n", b"---\n"):
            self.assertEqual(self.problems(data), [
                "manifest: the document is empty; expected a mapping with id and launchables"])

    def test_invalidYAML(self):
        """
        A YAML syntax error gives its line and column.
        """
        problems = self.problems(b"id: web\nlaunchables:\n  web: {a: b\n")
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("yaml: line 4, column 1: "), problems)
        problems = self.problems(b"id: a\n  b: c\n")
        self.assertTrue(problems[0].startswith("yaml: line 2, column 4: "), problems)

    def test_binary(self):
        """
        Bytes that are not text are refused.
        """
        self.assertEqual(self.problems(b"id: \xff\xfe"),
                         ["yaml: unacceptable character #x00ff: invalid start byte at byte 4"])
        self.assertTrue(self.problems(b"\x00\x01\x02")[0].startswith("yaml: "))
        self.assertTrue(self.problems(bytes(range(256)))[0].startswith("yaml: "))

    def test_odd(self):
        """
        Odd but well-formed YAML gives problems, not exceptions.
        """
        for data in (b"id: !!int x", b"id: !!timestamp x", b"id: !!python/object:os.system x",
                     b"[" * 5000, b"a: 1\n---\nb: 2\n", b"{? [a]: b}", b"<<: 1",
                     b"id: 0x" + b"f" * 5000, b"id: " + b"9" * 5000,
                     b"id: x\nlaunchables: {w: {launchable_type: hoist, location: "
                     b"'http://[::1/a', restart_timeout: '" + b"9" * 5000 + b"h'}}"):
            self.problems(data)

    def test_badSignatureWrapper(self):
        """
        A clear-signed manifest with a broken wrapper is refused.
        """
        signed = sign(manifestYAML())
        self.assertEqual(
            self.problems(signed.split(b"-----BEGIN PGP SIGNATURE-----")[0]),
            ["pgp: the clear-signed message has no -----BEGIN PGP SIGNATURE----- line"])
        self.assertEqual(self.problems(signed.replace(b"-----END PGP SIGNATURE-----", b"")),
                         ["pgp: the clear-signed message has no -----END PGP SIGNATURE----- line"])
        self.assertEqual(
            self.problems(b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256"),
            ["pgp: the clear-signed message has no blank line after its headers"])


class WarningTests(SynchronousTestCase):
    """
    Unknown fields give warnings, not problems.
    """

    def test_unknownFields(self):
        """
        Unknown fields at the top level and in stanzas are listed.
        """
        data = launchableYAML(colour="red", cgroup={"cpus": 1, "swap": 0})
        data += b"readonly: true\nstatus: {port: 80, proto: h2}\n"
        self.assertEqual(parseManifest(data).warnings, (
            "readonly: unknown field; ignored",
            "launchables.web.colour: unknown field; ignored",
            "launchables.web.cgroup.swap: unknown field; ignored",
            "status.proto: unknown field; ignored",
        ))

    def test_runAsDefault(self):
        """
        A pod id that is no user name, with no C{run_as}, gives a warning.
        """
        self.assertEqual(parseManifest(manifestYAML(id="Web:1")).warnings, (
            "run_as: defaults to the pod id 'Web:1', which is not a usable unix user name; "
            "set run_as",))


def sshSign(text, signature=b"U1NIU0lHAAAAAQ\nAAAAMwAA==\n"):
    """
    @return: C{text} followed by an (unverifiable) armored SSH signature.
    """
    return text + b"-----BEGIN SSH SIGNATURE-----\n" + signature + b"-----END SSH SIGNATURE-----\n"


class SignedTests(SynchronousTestCase):
    """
    PGP clear-signed and SSH-signed manifests.
    """

    def test_unsigned(self):
        """
        An unsigned manifest has no signature system.
        """
        self.assertIsNone(parseManifest(FULL).signatureSystem)

    def test_isSigned(self):
        """
        L{isSigned} tells bytes in a PGP clear-sign or SSH signature
        wrapper from a manifest with none, the same SHA or not.
        """
        from p2twisted.manifest.signed import isSigned
        self.assertEqual([isSigned(data) for data in (FULL, sign(FULL), sshSign(FULL))],
                         [False, True, True])
        self.assertEqual(parseManifest(sign(FULL)).sha(), parseManifest(FULL).sha())

    def test_signed(self):
        """
        The wrapper is stripped and dash-escaping undone; the signature and
        signed text are kept, and C{raw} is the original bytes.
        """
        text = b"---\n" + manifestYAML(config={"rule": "-x"})
        signed = sign(text)
        self.assertIn(b"\n- ---\n", signed)
        m = parseManifest(signed)
        self.assertEqual((m.id, m.config), ("web-pod", {"rule": "-x"}))
        self.assertEqual(m.raw, signed)
        self.assertEqual(m.signedBody, text[:-1])
        self.assertEqual(m.signature, b"-----BEGIN PGP SIGNATURE-----\n\niQEzBAEBCAAdFiEEabc\n"
                                      b"=XyZ1\n-----END PGP SIGNATURE-----\n")

    def test_crlf(self):
        """
        A wrapper with CRLF line endings is stripped too.
        """
        signed = sign(manifestYAML()).replace(b"\n", b"\r\n")
        m = parseManifest(signed)
        self.assertEqual(m.sha(), parseManifest(manifestYAML()).sha())
        self.assertFalse(m.signedBody.endswith(b"\r"))

    def test_pgpTrailingBlanks(self):
        """
        The PGP signed text is the text without trailing blanks on each
        line, which is what a clear signature covers.
        """
        m = parseManifest(sign(b"id: web-pod  \n" + manifestYAML(id=Ellipsis)))
        self.assertEqual(m.signatureSystem, "gpg")
        self.assertTrue(m.signedBody.startswith(b"id: web-pod\n"))

    def test_ssh(self):
        """
        An SSH-signed manifest is the manifest's bytes, which the signature
        covers exactly, followed by the armored signature.
        """
        text = manifestYAML(config={"rule": "-x"})
        signed = sshSign(text)
        m = parseManifest(signed)
        self.assertEqual((m.id, m.config, m.raw), ("web-pod", {"rule": "-x"}, signed))
        self.assertEqual((m.signatureSystem, m.signedBody), ("ssh", text))
        self.assertEqual(m.signature, signed[len(text):])

    def test_sshMalformed(self):
        """
        A broken SSH signature block is refused, saying what is wrong.
        """
        signed = sshSign(manifestYAML())
        for data, problem in [
                (signed.replace(b"-----END SSH SIGNATURE-----", b""),
                 "ssh: the signature has no -----END SSH SIGNATURE----- line"),
                (signed + b"id: evil\n", "ssh: text after the -----END SSH SIGNATURE----- line"),
                (sshSign(b""), "ssh: a signature with no manifest before it")]:
            self.assertEqual(self.problems(data), [problem])

    def problems(self, data):
        return self.assertRaises(ManifestError, parseManifest, data).problems


class SHATests(SynchronousTestCase):
    """
    The SHA-256 depends on meaning only.
    """

    def assertSameSHA(self, *variants):
        shas = {manifestSHA(v) for v in variants}
        self.assertEqual(len(shas), 1, variants)

    def test_hex(self):
        """
        C{sha} is 64 hex digits, and C{manifestSHA} is the same.
        """
        sha = parseManifest(FULL).sha()
        self.assertEqual(len(sha), 64)
        int(sha, 16)
        self.assertEqual(manifestSHA(FULL), sha)

    def test_formatting(self):
        """
        Key order, quoting, comments, whitespace and flow or block style do
        not change the SHA.
        """
        block = (b"id: web-pod\nlaunchables:\n  web:\n    launchable_type: hoist\n"
                 b"    location: " + WEB_URL.encode() + b"\n    env: {A: x, B: y}\n"
                 b"config: {a: 1, b: [1, 2]}\n")
        reordered = (b"# the pod\nconfig:\n  b:\n  - 1\n  - 2\n  a: 1   # one\n\n\n"
                     b"launchables:\n  'web':\n    env:\n      B: \"y\"\n      A: 'x'\n"
                     b"    location: \"" + WEB_URL.encode() + b"\"\n"
                     b"    launchable_type: \"hoist\"\n\"id\": 'web-pod'\n")
        flow = (b'{"config": {"a": 1, "b": [1, 2]}, "id": "web-pod", "launchables": {"web": '
                b'{"env": {"A": "x", "B": "y"}, "launchable_type": "hoist", "location": "'
                + WEB_URL.encode() + b'"}}}')
        self.assertSameSHA(block, reordered, flow, b"---\n" + block + b"...\n",
                           block.replace(b"\n", b"\r\n"))

    def test_signatureWrapper(self):
        """
        A PGP clear-signature (with dash-escaping) does not change the SHA.
        """
        text = b"---\n" + manifestYAML(config={"x": "-y"})
        self.assertSameSHA(text, sign(text), sign(text, signature=b"other\n"))

    def test_sshSignatureWrapper(self):
        """
        An SSH signature block does not change the SHA.
        """
        text = manifestYAML(config={"x": "-y"})
        self.assertSameSHA(text, sshSign(text), sshSign(text, signature=b"other\n"))

    def test_defaults(self):
        """
        Writing a default out does not change the SHA.
        """
        self.assertSameSHA(
            manifestYAML(),
            manifestYAML(run_as="web-pod", config={}, labels={}, resource_limits={},
                         termination_grace_period=3600,
                         status={"http": False, "path": "/_status", "localhost_only": False}),
            launchableYAML(restart_policy="always", restart_timeout="60s",
                           entry_points=["bin/launch"], env={}, no_halt_on_update=False),
            launchableYAML(restart_timeout="1m", entry_points=["./bin/launch"]),
            launchableYAML(restart_timeout=60, cgroup={}),
            manifestYAML(resource_limits={"cgroup": {}}))

    def test_equivalentSpellings(self):
        """
        Equal durations, sizes, CPU counts and digests written differently
        give one SHA, and so do the legacy status fields.
        """
        self.assertSameSHA(launchableYAML(restart_timeout="90s"),
                           launchableYAML(restart_timeout="1m30s"),
                           launchableYAML(restart_timeout=90),
                           launchableYAML(restart_timeout=90.0))
        self.assertSameSHA(launchableYAML(cgroup={"memory": "2G", "cpus": 2}),
                           launchableYAML(cgroup={"memory": "2048M", "cpus": 2.0}),
                           launchableYAML(cgroup={"memory": 2 ** 31, "cpus": 2}))
        self.assertSameSHA(launchableYAML(digest="ab" * 32), launchableYAML(digest="AB" * 32))
        self.assertSameSHA(manifestYAML(status_port=80, status_http=True),
                           manifestYAML(status={"port": 80, "http": True}),
                           manifestYAML(status={"port": 80}, status_http=True))
        unquoted = b"id: p\nlaunchables: {w: {launchable_type: hoist, location: 'file:///w'"
        self.assertSameSHA(unquoted + b", env: {V: 1.10, D: yes}}}",
                           unquoted + b", env: {V: '1.10', D: \"yes\"}}}")

    def test_unknownFieldsIgnored(self):
        """
        Ignored unknown fields do not change the SHA.
        """
        self.assertSameSHA(manifestYAML(), manifestYAML(comment="hello"))

    def test_changesOfMeaning(self):
        """
        Any change of meaning changes the SHA.
        """
        version = {"id": "abc", "artifact_name": "web"}
        variants = [
            manifestYAML(),
            manifestYAML(id="other-pod"),
            manifestYAML(run_as="nobody"),
            manifestYAML(config={"a": 1}),
            manifestYAML(config={"a": 2}),
            manifestYAML(config={"a": "1"}),
            manifestYAML(config={"a": 1.0}),
            manifestYAML(config={"db": {"pool": 20}}),
            manifestYAML(config={"db": {"pool": 21}}),
            manifestYAML(config={"db": [1, 2]}),
            manifestYAML(config={"db": [2, 1]}),
            manifestYAML(labels={"tier": "web"}),
            manifestYAML(status={"port": 80}),
            manifestYAML(status={"port": 80, "http": True}),
            manifestYAML(status={"port": 80, "path": "/health"}),
            manifestYAML(status={"localhost_only": True}),
            manifestYAML(termination_grace_period=30),
            manifestYAML(resource_limits={"cgroup": {"cpus": 1}}),
            manifestYAML(launchables={"web": MINIMAL["launchables"]["web"],
                                      "worker": MINIMAL["launchables"]["web"]}),
            manifestYAML(launchables={"worker": MINIMAL["launchables"]["web"]}),
            launchableYAML(location=WEB_URL.replace("3c02", "4d02")),
            launchableYAML(location=Ellipsis, version=version),
            launchableYAML(location=Ellipsis, version=dict(version, tags={"a": "b"})),
            launchableYAML(digest="a" * 64),
            launchableYAML(digest_location="https://a/b.sha256sums"),
            launchableYAML(entry_points=["bin/other"]),
            launchableYAML(entry_points=["bin/launch", "bin/other"]),
            launchableYAML(restart_policy="never"),
            launchableYAML(restart_timeout="61s"),
            launchableYAML(env={"A": "1"}),
            launchableYAML(env={"A": "2"}),
            launchableYAML(env={"A": ""}),
            launchableYAML(cgroup={"cpus": 1}),
            launchableYAML(cgroup={"memory": "1G"}),
            launchableYAML(no_halt_on_update=True),
        ]
        shas = [manifestSHA(v) for v in variants]
        self.assertEqual(len(set(shas)), len(variants))


class NormalizeTests(SynchronousTestCase):
    """
    The canonical form and its YAML.
    """

    def test_roundTrip(self):
        """
        The canonical YAML parses back to the same SHA and canonical form,
        and is its own canonical YAML.
        """
        for data in (FULL, sign(FULL), manifestYAML(status_port=80),
                     launchableYAML(env={"V": "\u00e9t\u00e9", "W": "\ud800"})):
            m = parseManifest(data)
            again = parseManifest(m.canonicalYAML())
            self.assertEqual(again.sha(), m.sha())
            self.assertEqual(again.canonical(), m.canonical())
            self.assertEqual(again.canonicalYAML(), m.canonicalYAML())

    def test_canonicalForm(self):
        """
        The canonical form fills in defaults and normalizes units.
        """
        canonical = parseManifest(FULL).canonical()
        self.assertEqual(canonical["launchables"]["migrator"], {
            "launchable_type": "hoist",
            "version": {"id": "9f1e0c2a7b3d4e5f60718293a4b5c6d7e8f90123",
                        "artifact_name": "billing-migrator", "tags": {"channel": "stable"}},
            "entry_points": ["bin/launch"],
            "restart_policy": "never",
            "restart_timeout": 60.0,
            "env": {},
            "no_halt_on_update": False,
        })
        self.assertEqual(canonical["status"], {"port": 8443, "http": False, "path": "/_status",
                                               "localhost_only": False})
        self.assertEqual(canonical["resource_limits"],
                         {"cgroup": {"cpus": 4.0, "memory": 4294967296}})

    def test_canonicalYAMLStyle(self):
        """
        The canonical YAML is block style with sorted keys.
        """
        text = parseManifest(manifestYAML()).canonicalYAML()
        self.assertTrue(text.startswith(b"config: {}\nid: web-pod\nlabels: {}\nlaunchables:\n"),
                        text)
        self.assertEqual(yaml.safe_load(text), parseManifest(manifestYAML()).canonical())


class LaunchableVersionTests(SynchronousTestCase):
    """
    L{launchableVersion}.
    """

    def versionOf(self, **fields):
        return launchableVersion(parseManifest(launchableYAML(**fields)).launchables["web"])

    def test_fromFileName(self):
        """
        The version is the text after the last C{_} of the file name,
        without any C{-suffix}.
        """
        self.assertEqual(self.versionOf(), "3c021aff048ca8117593f9c71e03b87cf72fd440")
        self.assertEqual(self.versionOf(location="https://a/x/my_app_abc123-linux.tar.gz"),
                         "abc123")
        self.assertEqual(self.versionOf(location="file:///srv/web_1.2.3.tar.gz?x=1"), "1.2.3")

    def test_unparseable(self):
        """
        Without a version in the file name, the version is the start of the
        location's SHA-256.
        """
        for location in ("https://a/web.tar.gz", "https://a/web_1.zip", "https://a/_.tar.gz",
                         "https://a/web_v%201.tar.gz"):
            self.assertEqual(self.versionOf(location=location),
                             hashlib.sha256(location.encode()).hexdigest()[:12])

    def test_versionStanza(self):
        """
        A C{version} stanza gives its id.
        """
        self.assertEqual(
            self.versionOf(location=Ellipsis, version={"id": "9f1e", "artifact_name": "web"}),
            "9f1e")


class FastLoaderTests(SynchronousTestCase):
    """
    Manifests load through libyaml's parser when PyYAML has it, with the same
    result as the pure-Python loader.
    """

    def setUp(self):
        from p2twisted.manifest import yamlload
        if yamlload._FastLoader is None:
            raise SkipTest("PyYAML is built without libyaml")
        self.yamlload = yamlload

    def test_used(self):
        """
        A valid manifest is loaded by the libyaml loader alone.
        """
        calls = []
        real = self.yamlload._load
        self.patch(self.yamlload, "_load",
                   lambda cls, body: calls.append(cls) or real(cls, body))
        parseManifest(manifestYAML())
        self.assertEqual(calls, [self.yamlload._FastLoader])

    def test_same(self):
        """
        Both loaders give the same manifest, warnings and timestamps-as-text;
        a document the fast one cannot load is described by the other.
        """
        data = launchableYAML(colour="red") + b"created: 2001-12-14t21:59:43.10-05:00\n"
        fast = parseManifest(data)
        self.patch(self.yamlload, "_FastLoader", None)
        slow = parseManifest(data)
        self.assertEqual((fast.warnings, fast.sha(), fast.configYAML()),
                         (slow.warnings, slow.sha(), slow.configYAML()))
        self.assertIn("created: unknown field; ignored", fast.warnings)

    def assertSameAsPurePython(self, data):
        """
        C{data} gets the same outcome (manifest or error) from both loaders.
        """
        def outcome():
            try:
                m = parseManifest(data)
            except ManifestError as e:
                return ("refused", str(e))
            return ("accepted", m.warnings, m.sha())
        fast = outcome()
        self.patch(self.yamlload, "_FastLoader", None)
        self.assertEqual(fast, outcome())
        return fast

    def test_tabSeparation(self):
        """
        A tab after a key's colon, which PyYAML refuses and libyaml takes as
        a space, is refused by both.
        """
        data = manifestYAML().replace(b"id: ", b"id:\t")
        self.assertEqual(self.assertSameAsPurePython(data)[0], "refused")

    def test_deepNesting(self):
        """
        Nesting deeper than PyYAML's recursion limit allows, which libyaml
        composes, is refused by both.
        """
        depth = 5000
        data = manifestYAML() + b"deep: " + b"[" * depth + b"]" * depth + b"\n"
        outcome = self.assertSameAsPurePython(data)
        self.assertEqual(outcome[0], "refused")
        self.assertIn("nested too deeply", outcome[1])

    def test_veryDeepNesting(self):
        """
        Nesting deep enough to overflow libyaml's composer (it recurses on the
        C stack) is refused, not a crash of the process.
        """
        depth = 200000
        script = ("import sys\n"
                  "from p2twisted.errors import ManifestError\n"
                  "from p2twisted.manifest import parseManifest\n"
                  "try:\n"
                  "    parseManifest(sys.stdin.buffer.read())\n"
                  "except ManifestError as e:\n"
                  "    print(e)\n")
        data = manifestYAML() + b"deep: " + b"[" * depth + b"]" * depth + b"\n"
        done = subprocess.run([sys.executable, "-c", script], input=data,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        self.assertEqual(done.returncode, 0, done.stdout)
        self.assertIn(b"nested too deeply", done.stdout)
