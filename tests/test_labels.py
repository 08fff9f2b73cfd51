"""
Tests for L{p2twisted.labels}: the selector grammar, label validation and the
label store.
"""

from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from p2twisted import labels
from p2twisted.errors import InvalidKey, SelectorError, VersionConflict
from p2twisted.labels import LabelStore, parseChanges, parseSelector
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore

LABELS = {"env": "prod", "tier": "web", "example.com/team": "infra"}


class SelectorMatchTests(unittest.TestCase):
    """
    Every operator of the grammar, and how requirements combine.
    """

    def assertMatches(self, text, labelMap, expected=True):
        self.assertEqual(parseSelector(text).matches(labelMap), expected,
                         "%r against %r" % (text, labelMap))

    def test_equals(self):
        """
        C{k=v} and C{k==v} match only when C{k} has the value C{v}.
        """
        for text in ("env=prod", "env==prod"):
            self.assertMatches(text, LABELS)
            self.assertMatches(text, {"env": "dev"}, False)
            self.assertMatches(text, {}, False)

    def test_notEquals(self):
        """
        C{k!=v} matches a different value and, as in Kubernetes, a missing
        key.
        """
        self.assertMatches("env!=dev", LABELS)
        self.assertMatches("env!=dev", {})
        self.assertMatches("env!=prod", LABELS, False)

    def test_in(self):
        """
        C{k in (a,b)} matches when C{k} has one of the values.
        """
        self.assertMatches("env in (dev,prod)", LABELS)
        self.assertMatches("env in (dev,staging)", LABELS, False)
        self.assertMatches("env in (dev,prod)", {}, False)

    def test_notIn(self):
        """
        C{k notin (a,b)} matches other values and a missing key.
        """
        self.assertMatches("env notin (dev,staging)", LABELS)
        self.assertMatches("env notin (dev,staging)", {})
        self.assertMatches("env notin (dev,prod)", LABELS, False)

    def test_exists(self):
        """
        A bare key matches when the key is present, whatever its value.
        """
        self.assertMatches("tier", LABELS)
        self.assertMatches("tier", {"tier": ""})
        self.assertMatches("zone", LABELS, False)

    def test_doesNotExist(self):
        """
        C{!k} matches when the key is absent.
        """
        self.assertMatches("!zone", LABELS)
        self.assertMatches("!tier", LABELS, False)

    def test_emptyValue(self):
        """
        C{k=} selects the empty value, as label values may be empty.
        """
        self.assertMatches("tier=", {"tier": ""})
        self.assertMatches("tier=", LABELS, False)

    def test_prefixedKey(self):
        """
        A key with a DNS-subdomain prefix is one key.
        """
        self.assertMatches("example.com/team=infra", LABELS)
        self.assertMatches("example.com/team in (web)", LABELS, False)

    def test_and(self):
        """
        Commas join requirements with AND.
        """
        self.assertMatches("env=prod,tier=web", LABELS)
        self.assertMatches("env=prod,tier=db", LABELS, False)
        self.assertMatches("env=prod,!zone,tier in (web,db),owner notin (x)", LABELS)

    def test_empty(self):
        """
        An empty or blank selector matches everything.
        """
        for text in ("", "   ", "\t"):
            self.assertMatches(text, LABELS)
            self.assertMatches(text, {})
            self.assertEqual(parseSelector(text), labels.everything())

    def test_whitespace(self):
        """
        Whitespace is allowed around every token.
        """
        spaced = parseSelector("  env = prod ,  tier in ( web , db ) , ! zone ,owner  ")
        self.assertEqual(spaced, parseSelector("env=prod,tier in (web,db),!zone,owner"))

    def test_everything(self):
        """
        L{labels.everything} matches any label map and prints as C{""}.
        """
        self.assertTrue(labels.everything().matches({}))
        self.assertTrue(labels.everything().matches(LABELS))
        self.assertEqual(str(labels.everything()), "")

    def test_nothing(self):
        """
        L{labels.nothing} matches no label map, and survives a round trip
        through its text.
        """
        self.assertFalse(labels.nothing().matches({}))
        self.assertFalse(labels.nothing().matches({"x": "1"}))
        self.assertEqual(parseSelector(str(labels.nothing())), labels.nothing())


class CanonicalFormTests(unittest.TestCase):
    """
    C{str(selector)} is canonical and parses back to an equal selector.
    """

    def test_canonical(self):
        """
        Requirements are sorted by key, C{==} becomes C{=}, set values are
        sorted and deduplicated, duplicates vanish.
        """
        cases = [
            ("", ""),
            ("tier==web", "tier=web"),
            (" b!=1 , a ", "a,b!=1"),
            ("z notin (c,a,c), !y, x in (b,a)", "x in (a,b),!y,z notin (a,c)"),
            ("a=1,a=1", "a=1"),
            ("k=", "k="),
        ]
        for text, canonical in cases:
            self.assertEqual(str(parseSelector(text)), canonical, text)

    def test_roundTrip(self):
        """
        Parsing the canonical form gives an equal selector.
        """
        for text in ("env=prod,tier!=db", "x in (a,b),!y,z notin (c)", "example.com/k=v,k"):
            selector = parseSelector(text)
            self.assertEqual(parseSelector(str(selector)), selector)


class SelectorErrorTests(unittest.TestCase):
    """
    Every parse error is a L{SelectorError} naming the 1-based column of the
    problem.
    """

    def assertError(self, text, column, fragment):
        e = self.assertRaises(SelectorError, parseSelector, text)
        self.assertEqual((e.column, e.text), (column, text), str(e))
        self.assertIn(fragment, str(e))
        self.assertIn("at column %d of %r" % (column, text), str(e))

    def test_unclosedSet(self):
        """
        A set without C{)} is reported at the end of the text.
        """
        self.assertError("env in (a,b", 12, "expected ')'")

    def test_badSetSeparator(self):
        """
        Anything but C{,} or C{)} after a set value is an error there.
        """
        self.assertError("env in (a b)", 11, "expected ',' or ')'")

    def test_emptySet(self):
        """
        C{in ()} and C{notin ()} need at least one value.
        """
        self.assertError("env in ()", 9, "empty value set")
        self.assertError("env notin ()", 12, "empty value set")

    def test_emptySetValue(self):
        """
        An empty item in a set is an error at the token after the comma.
        """
        self.assertError("env in (a,)", 11, "expected a value for 'env'")

    def test_missingParenthesis(self):
        """
        C{in} must be followed by C{(}.
        """
        self.assertError("env in", 7, "expected '(' after 'in'")
        self.assertError("env notin a", 11, "expected '(' after 'notin'")

    def test_missingKey(self):
        """
        A selector beginning with a comma, ending with one, or a lone C{!}
        lacks a key.
        """
        self.assertError(",env", 1, "expected a label key")
        self.assertError("env,", 5, "expected a label key")
        self.assertError("env, !", 7, "expected a label key")
        self.assertError("=prod", 1, "expected a label key")

    def test_missingOperator(self):
        """
        Two names in a row lack an operator between them.
        """
        self.assertError("env prod", 5, "expected an operator")
        self.assertError("env!", 4, "expected an operator")

    def test_trailingGarbage(self):
        """
        Text after a complete requirement that is not a comma is an error.
        """
        self.assertError("env=prod web", 10, "expected ',' or the end")
        self.assertError("env=a=b", 6, "expected ',' or the end")

    def test_badValueToken(self):
        """
        A symbol where a value belongs is an error there.
        """
        self.assertError("env=(a)", 5, "expected a value for 'env'")

    def test_invalidKey(self):
        """
        An invalid key is reported at its column with what is allowed.
        """
        self.assertError("env=a, Bad_Prefix/x=1", 8, "prefix 'Bad_Prefix' must be a DNS subdomain")
        self.assertError("-env", 1, "invalid label key '-env'")

    def test_invalidValue(self):
        """
        Selector values are validated like label values.
        """
        self.assertError("env=-prod", 5, "invalid value '-prod' for label 'env'")
        self.assertError("env in (ok,%s)" % ("v" * 64,), 12, "64 characters long")


class ValidationTests(unittest.TestCase):
    """
    Label keys and values are validated as Kubernetes does.
    """

    def test_validKeys(self):
        """
        Names of letters, digits, C{-_.} (alphanumeric at both ends), with an
        optional DNS-subdomain prefix, up to the length limits.
        """
        for key in ("a", "env", "A-b_c.d", "x" * 63, "example.com/app", "a-b.c/Name",
                    "p2.example.io/tier", ".".join(["a" * 63] * 3) + "/" + "n" * 63):
            self.assertIsNone(labels.keyProblem(key), key)

    def test_invalidKeys(self):
        """
        Empty names, bad characters, bad ends, over-long names or prefixes,
        uppercase or empty prefixes are rejected, naming the key.
        """
        cases = [
            ("", "name is empty"),
            ("-a", "beginning and ending with a letter or digit"),
            ("a_", "beginning and ending"),
            ("a b", "letters, digits"),
            ("x" * 64, "64 characters long"),
            ("Example.com/a", "prefix 'Example.com' must be a DNS subdomain"),
            ("/a", "prefix '' must be"),
            ("example.com/", "name is empty"),
            ("a/b/c", "prefix 'a/b'"),
            ("a" * 254 + "/x", "at most 253 characters"),
            ("exa_mple.com/a", "DNS subdomain"),
        ]
        for key, fragment in cases:
            problem = labels.keyProblem(key)
            self.assertIn(fragment, problem or "", key)
            self.assertIn(repr(key), problem)

    def test_validValues(self):
        """
        Values may be empty or like a name, up to 63 characters.
        """
        for value in ("", "a", "prod", "1.2.3", "A_b-c", "v" * 63):
            self.assertIsNone(labels.valueProblem("k", value), value)

    def test_invalidValues(self):
        """
        Bad characters, bad ends, over-long values and non-text are rejected,
        naming the key and the value.
        """
        for value in ("a b", "-a", "a.", "v" * 64, "a/b", 3):
            problem = labels.valueProblem("k", value)
            self.assertIn("for label 'k'", problem or "", value)
            self.assertIn(repr(value), problem)

    def test_validateLabels(self):
        """
        L{labels.validateLabels} returns a valid map and otherwise raises one
        error naming every problem.
        """
        self.assertEqual(labels.validateLabels(LABELS), LABELS)
        e = self.assertRaises(SelectorError, labels.validateLabels,
                              {"ok": "fine", "Bad/x": "1", "y": "no good"})
        self.assertIn("'Bad/x'", str(e))
        self.assertIn("'no good'", str(e))
        self.assertNotIn("'ok'", str(e))


class ParseChangesTests(unittest.TestCase):
    """
    Command-line label changes: C{k=v} sets, C{k-} removes.
    """

    def test_setAndRemove(self):
        """
        Each argument becomes a set or a removal.
        """
        changes = parseChanges(["env=prod", "tier-", "empty=", "example.com/x=1", "a-"])
        self.assertEqual(changes.set, {"env": "prod", "empty": "", "example.com/x": "1"})
        self.assertEqual(changes.remove, ("a", "tier"))

    def test_applyTo(self):
        """
        L{LabelChanges.applyTo} returns a changed copy.
        """
        old = {"env": "dev", "tier": "web"}
        self.assertEqual(parseChanges(["env=prod", "tier-", "zone-"]).applyTo(old),
                         {"env": "prod"})
        self.assertEqual(old, {"env": "dev", "tier": "web"})

    def test_invalid(self):
        """
        Malformed arguments, invalid keys and values, and a key both set and
        removed are all reported in one error.
        """
        e = self.assertRaises(SelectorError, parseChanges,
                              ["env", "x=bad value", "Bad/k-", "t=1", "t-"])
        for fragment in ("cannot understand 'env'", "'bad value'", "'Bad/k'",
                         "label 't' is both set and removed"):
            self.assertIn(fragment, str(e))


class RacingStore(object):
    """
    A store wrapper that, on the first C{cas}, C{create} or C{delete}, first
    runs C{race()} (another writer sneaking in between our read and our
    write).
    """

    def __init__(self, store, race):
        self._store = store
        self._race = race
        self.backend = store.backend

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _raced(self, method, *args):
        race, self._race = self._race, None
        if race is None:
            return method(*args)
        return race().addCallback(lambda _: method(*args))

    def cas(self, key, value, version):
        return self._raced(self._store.cas, key, value, version)

    def create(self, key, value):
        return self._raced(self._store.create, key, value)

    def delete(self, key, version=None):
        return self._raced(self._store.delete, key, version)


class AlwaysConflictingStore(RacingStore):
    """
    A store wrapper where every C{cas} loses the race.
    """

    def cas(self, key, value, version):
        self.attempts = getattr(self, "attempts", 0) + 1
        return defer.fail(VersionConflict(key, self.backend))


class LabelStoreTests(unittest.TestCase):
    """
    L{LabelStore} over a L{MemoryStore}.
    """

    def setUp(self):
        self.store = MemoryStore()
        self.labels = LabelStore(self.store)

    def stored(self, labelType, objectId):
        entry = self.store.state.entries.get(keys.label(labelType, objectId))
        return entry.value if entry else None

    @defer.inlineCallbacks
    def test_getAbsent(self):
        """
        An object without labels has the empty map.
        """
        self.assertEqual((yield self.labels.getLabels("node", "n1")), {})

    @defer.inlineCallbacks
    def test_applyCreates(self):
        """
        Applying to an object without labels creates one sorted JSON map and
        fires with it.
        """
        result = yield self.labels.applyLabels("node", "n1", {"tier": "web", "env": "prod"})
        self.assertEqual(result, {"env": "prod", "tier": "web"})
        self.assertEqual(self.stored("node", "n1"), b'{"env":"prod","tier":"web"}')
        self.assertEqual((yield self.labels.getLabels("node", "n1")), result)

    @defer.inlineCallbacks
    def test_applyMerges(self):
        """
        Applying sets and removes only the labels named.
        """
        yield self.labels.applyLabels("node", "n1", {"env": "dev", "tier": "web", "az": "a"})
        result = yield self.labels.applyLabels("node", "n1", {"env": "prod"}, remove=["az"])
        self.assertEqual(result, {"env": "prod", "tier": "web"})
        self.assertEqual((yield self.labels.getLabels("node", "n1")), result)

    @defer.inlineCallbacks
    def test_removeLastDeletesKey(self):
        """
        Removing the last label deletes the entry.
        """
        yield self.labels.applyLabels("node", "n1", {"env": "prod"})
        self.assertEqual((yield self.labels.applyLabels("node", "n1", remove=["env"])), {})
        self.assertIsNone(self.stored("node", "n1"))

    @defer.inlineCallbacks
    def test_removeFromAbsent(self):
        """
        Removing labels of an object without any writes nothing.
        """
        self.assertEqual((yield self.labels.applyLabels("node", "n1", remove=["env"])), {})
        self.assertEqual(self.store.state.entries, {})

    @defer.inlineCallbacks
    def test_unchangedWritesNothing(self):
        """
        Applying labels an object already has leaves the entry's version
        alone.
        """
        yield self.labels.applyLabels("node", "n1", {"env": "prod"})
        version = self.store.state.entries["labels/node/n1"].version
        yield self.labels.applyLabels("node", "n1", {"env": "prod"})
        self.assertEqual(self.store.state.entries["labels/node/n1"].version, version)

    @defer.inlineCallbacks
    def test_applyInvalid(self):
        """
        Invalid labels or removal keys fail with L{SelectorError} and write
        nothing.
        """
        yield self.assertFailure(
            self.labels.applyLabels("node", "n1", {"env": "no good"}), SelectorError)
        yield self.assertFailure(
            self.labels.applyLabels("node", "n1", {"env": "ok"}, remove=["Bad/x"]), SelectorError)
        self.assertEqual(self.store.state.entries, {})

    @defer.inlineCallbacks
    def test_badTypeOrId(self):
        """
        An unknown type or an id with the wrong number of parts fails with
        L{InvalidKey} naming the valid types or the expected id shape.
        """
        e = yield self.assertFailure(self.labels.getLabels("host", "n1"), InvalidKey)
        self.assertIn("daemon_set, node, pod, pod_cluster, replication_controller, roll", str(e))
        e = yield self.assertFailure(self.labels.applyLabels("pod", "web", {"a": "b"}),
                                     InvalidKey)
        self.assertIn("2 part(s)", str(e))
        yield self.assertFailure(self.labels.select("host", ""), InvalidKey)

    @defer.inlineCallbacks
    def test_setLabels(self):
        """
        L{LabelStore.setLabels} replaces the whole map; the empty map deletes
        the entry.
        """
        yield self.labels.applyLabels("node", "n1", {"env": "dev", "tier": "web"})
        self.assertEqual((yield self.labels.setLabels("node", "n1", {"az": "b"})), {"az": "b"})
        self.assertEqual((yield self.labels.getLabels("node", "n1")), {"az": "b"})
        yield self.labels.setLabels("node", "n1", {})
        self.assertIsNone(self.stored("node", "n1"))

    @defer.inlineCallbacks
    def test_removeObject(self):
        """
        L{LabelStore.removeObject} deletes every label of one object.
        """
        yield self.labels.applyLabels("pod", "n1/web", {"env": "prod"})
        yield self.labels.applyLabels("pod", "n2/web", {"env": "prod"})
        yield self.labels.removeObject("pod", "n1/web")
        self.assertEqual(list((yield self.labels.listLabels("pod"))), ["n2/web"])

    @defer.inlineCallbacks
    def test_podIds(self):
        """
        Pod ids are C{<node>/<pod_id>}, stored under C{labels/pod/<node>/<pod_id>}.
        """
        yield self.labels.applyLabels("pod", "n1/web", {"app": "web"})
        self.assertEqual(self.stored("pod", "n1/web"), b'{"app":"web"}')
        self.assertIn("labels/pod/n1/web", self.store.state.entries)
        self.assertEqual((yield self.labels.listLabels("pod")), {"n1/web": {"app": "web"}})
        self.assertEqual((yield self.labels.select("pod", "app=web")),
                         [("n1/web", {"app": "web"})])

    @defer.inlineCallbacks
    def test_selectAcrossTypes(self):
        """
        L{LabelStore.select} finds matching objects of one type only, sorted
        by id; it takes a L{Selector} or its text.
        """
        yield self.labels.applyLabels("node", "n2", {"env": "prod", "az": "a"})
        yield self.labels.applyLabels("node", "n1", {"env": "prod", "az": "b"})
        yield self.labels.applyLabels("node", "n3", {"env": "dev"})
        yield self.labels.applyLabels("replication_controller", "rc1", {"env": "prod"})
        yield self.labels.applyLabels("pod", "n1/web", {"env": "prod"})
        found = yield self.labels.select("node", "env=prod")
        self.assertEqual([i for i, _ in found], ["n1", "n2"])
        self.assertEqual(found[0], ("n1", {"env": "prod", "az": "b"}))
        found = yield self.labels.select("node", parseSelector("az notin (a)"))
        self.assertEqual([i for i, _ in found], ["n1", "n3"])
        found = yield self.labels.select("replication_controller", "")
        self.assertEqual(found, [("rc1", {"env": "prod"})])
        self.assertEqual((yield self.labels.select("daemon_set", "")), [])
        self.assertEqual((yield self.labels.select("node", labels.nothing())), [])

    @defer.inlineCallbacks
    def test_selectBadSelector(self):
        """
        A malformed selector text fails with L{SelectorError}.
        """
        e = yield self.assertFailure(self.labels.select("node", "env in ("), SelectorError)
        self.assertEqual(e.column, 9)

    @defer.inlineCallbacks
    def test_concurrentAppliers(self):
        """
        When another writer changes the labels between our read and our
        write, our compare-and-set fails, we re-read and retry, and both
        changes land.
        """
        yield self.labels.applyLabels("node", "n1", {"env": "dev"})
        other = LabelStore(self.store)
        racing = LabelStore(RacingStore(
            self.store, lambda: other.applyLabels("node", "n1", {"tier": "web"})))
        result = yield racing.applyLabels("node", "n1", {"az": "a"}, remove=["env"])
        self.assertEqual(result, {"az": "a", "tier": "web"})
        self.assertEqual((yield self.labels.getLabels("node", "n1")), result)

    @defer.inlineCallbacks
    def test_concurrentCreators(self):
        """
        Two writers labelling a fresh object both land: the loser of the
        create race retries as an update.
        """
        other = LabelStore(self.store)
        racing = LabelStore(RacingStore(
            self.store, lambda: other.applyLabels("node", "n1", {"tier": "web"})))
        yield racing.applyLabels("node", "n1", {"env": "prod"})
        self.assertEqual((yield self.labels.getLabels("node", "n1")),
                         {"env": "prod", "tier": "web"})

    @defer.inlineCallbacks
    def test_concurrentRemoval(self):
        """
        When the entry vanishes between our read and our delete, the retry
        finds nothing left to do.
        """
        yield self.labels.applyLabels("node", "n1", {"env": "dev"})
        other = LabelStore(self.store)
        racing = LabelStore(RacingStore(self.store, lambda: other.removeObject("node", "n1")))
        self.assertEqual((yield racing.applyLabels("node", "n1", remove=["env"])), {})
        self.assertEqual(self.store.state.entries, {})

    @defer.inlineCallbacks
    def test_retriesBounded(self):
        """
        When every write loses, L{LabelStore.applyLabels} gives up after
        C{retries} attempts with L{VersionConflict} naming the key.
        """
        yield self.labels.applyLabels("node", "n1", {"env": "dev"})
        conflicting = AlwaysConflictingStore(self.store, None)
        e = yield self.assertFailure(
            LabelStore(conflicting, retries=4).applyLabels("node", "n1", {"env": "prod"}),
            VersionConflict)
        self.assertEqual(conflicting.attempts, 4)
        self.assertIn("labels/node/n1", str(e))
        self.assertIn("after 4 attempts", str(e))

    @defer.inlineCallbacks
    def test_corruptSkippedOnSelect(self):
        """
        An entry that is not a JSON object of text values is skipped by
        select and list, with a warning naming the key.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield self.labels.applyLabels("node", "n1", {"env": "prod"})
        yield self.store.put("labels/node/n2", b"{not json")
        yield self.store.put("labels/node/n3", b'["env"]')
        yield self.store.put("labels/node/n4", b'{"env": 1}')
        found = yield self.labels.select("node", "")
        self.assertEqual(found, [("n1", {"env": "prod"})])
        self.assertEqual(list((yield self.labels.listLabels("node"))), ["n1"])
        warned = [e["key"] for e in events if e.get("log_level") is not None
                  and e["log_level"].name == "warn" and "key" in e]
        for key in ("labels/node/n2", "labels/node/n3", "labels/node/n4"):
            self.assertIn(key, warned)

    @defer.inlineCallbacks
    def test_corruptRefusedOnApply(self):
        """
        Applying labels to an unreadable entry fails with L{CorruptLabels}
        naming the key, and leaves the entry alone; L{LabelStore.setLabels}
        may overwrite it.
        """
        yield self.store.put("labels/node/n1", b"{not json")
        e = yield self.assertFailure(
            self.labels.applyLabels("node", "n1", {"env": "prod"}), labels.CorruptLabels)
        self.assertIn("labels/node/n1", str(e))
        self.assertIn("overwrite or delete it", str(e))
        self.assertEqual(self.stored("node", "n1"), b"{not json")
        yield self.assertFailure(self.labels.getLabels("node", "n1"), labels.CorruptLabels)
        yield self.labels.setLabels("node", "n1", {"env": "prod"})
        self.assertEqual((yield self.labels.getLabels("node", "n1")), {"env": "prod"})
