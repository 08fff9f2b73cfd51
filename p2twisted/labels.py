# -*- test-case-name: tests.test_labels -*-
"""
Labels and label selectors (P2's C{pkg/labels}, after Kubernetes' v1.2).

Every labelled object (see L{keys.LABEL_TYPES}) has one map of labels,
stored as a JSON object at C{keys.label(type, id)}.  A selector picks objects
by their labels, with the Kubernetes grammar::

    env=prod, tier==web      equality (C{=} and C{==} are the same)
    env!=prod                inequality; also matches objects without C{env}
    env in (prod,staging)    set membership
    env notin (dev)          set exclusion; also matches objects without C{env}
    env                      C{env} exists
    !env                     C{env} does not exist

Commas mean AND; an empty selector matches everything.
"""

import json

import attr
from twisted.internet import defer
from twisted.logger import Logger

from p2twisted.errors import InvalidKey, KeyExists, SelectorError, VersionConflict
from p2twisted.labelsyntax import _nameProblem, keyProblem, valueProblem  # noqa: F401
from p2twisted.records import CorruptRecord
from p2twisted.records.base import loadObject
from p2twisted.store import keys

log = Logger()

EQUALS = "="
NOT_EQUALS = "!="
IN = "in"
NOT_IN = "notin"
EXISTS = "exists"
DOES_NOT_EXIST = "!"

def validateLabels(labels):
    """
    Check every key and value of a label map.

    @return: C{labels}
    @raise SelectorError: naming every invalid key and value.
    """
    problems = [p for k, v in sorted(labels.items(), key=lambda kv: str(kv[0]))
                for p in (keyProblem(k), valueProblem(k, v)) if p]
    if problems:
        raise SelectorError("; ".join(problems))
    return labels


@attr.s(frozen=True)
class LabelChanges(object):
    """
    Changes to one object's labels.

    @ivar set: C{{key: value}} to set.
    @ivar remove: keys to remove, a sorted tuple.
    """

    set = attr.ib()
    remove = attr.ib()

    def applyTo(self, labels):
        """
        @return: a new map: C{labels} with these changes made.
        """
        result = {k: v for k, v in labels.items() if k not in self.remove}
        result.update(self.set)
        return result


def parseChanges(args):
    """
    Parse command-line label changes: C{key=value} sets a label, C{key-}
    removes one.

    @return: L{LabelChanges}
    @raise SelectorError: naming every malformed argument, invalid key or
        value, and key both set and removed.
    """
    toSet, toRemove, problems = {}, set(), []
    for arg in args:
        if "=" in arg:
            key, _, value = arg.partition("=")
            toSet[key] = value
            problems.extend(p for p in (keyProblem(key), valueProblem(key, value)) if p)
        elif arg.endswith("-"):
            key = arg[:-1]
            toRemove.add(key)
            problems.extend(p for p in (keyProblem(key),) if p)
        else:
            problems.append("cannot understand %r: write key=value to set a label "
                            "or key- to remove one" % (arg,))
    problems.extend("label %r is both set and removed" % (key,)
                    for key in sorted(toRemove.intersection(toSet)))
    if problems:
        raise SelectorError("; ".join(problems))
    return LabelChanges(toSet, tuple(sorted(toRemove)))


# Selectors

@attr.s(frozen=True)
class Requirement(object):
    """
    One condition of a selector: C{key}, an operator (L{EQUALS},
    L{NOT_EQUALS}, L{IN}, L{NOT_IN}, L{EXISTS}, L{DOES_NOT_EXIST}) and a
    sorted tuple of values (one for the equality operators, none for the
    existence ones).
    """

    key = attr.ib()
    operator = attr.ib()
    values = attr.ib(converter=lambda vs: tuple(sorted(set(vs))))

    def matches(self, labels):
        """
        @return: whether the label map C{labels} meets this requirement.
        """
        if self.operator == EXISTS:
            return self.key in labels
        if self.operator == DOES_NOT_EXIST:
            return self.key not in labels
        found = self.key in labels and labels[self.key] in self.values
        return found if self.operator in (EQUALS, IN) else not found

    def __str__(self):
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        if self.operator in (EQUALS, NOT_EQUALS):
            return "%s%s%s" % (self.key, self.operator, self.values[0])
        return "%s %s (%s)" % (self.key, self.operator, ",".join(self.values))


@attr.s(frozen=True)
class Selector(object):
    """
    A label selector: the AND of its requirements (sorted, without
    duplicates); no requirements match everything.  C{str()} is the canonical
    form, which L{parseSelector} reads back.
    """

    requirements = attr.ib(
        converter=lambda rs: tuple(sorted(set(rs), key=lambda r: (r.key, str(r)))))

    def matches(self, labels):
        """
        @return: whether the label map C{labels} meets every requirement.
        """
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self):
        return ",".join(str(r) for r in self.requirements)


def everything():
    """
    @return: the L{Selector} matching every object.
    """
    return Selector(())


def nothing():
    """
    @return: a L{Selector} matching no object (P2's C{x=1,x=0}).
    """
    return Selector((Requirement("x", EQUALS, ("0",)), Requirement("x", EQUALS, ("1",))))


@attr.s(frozen=True)
class _Token(object):
    kind = attr.ib()  # "name", "end", or the symbol itself
    text = attr.ib()
    column = attr.ib()  # 1-based


_SYMBOLS = ("==", "!=", "=", "!", ",", "(", ")")
_DELIMITERS = frozenset("=!,()")


def _tokenize(text):
    """
    @return: the L{_Token}s of C{text}, ending with an C{"end"} token.
    """
    tokens, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        symbol = next((s for s in _SYMBOLS if text.startswith(s, i)), None)
        if symbol:
            tokens.append(_Token(symbol, symbol, i + 1))
            i += len(symbol)
            continue
        start = i
        while i < len(text) and not text[i].isspace() and text[i] not in _DELIMITERS:
            i += 1
        tokens.append(_Token("name", text[start:i], start + 1))
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser(object):
    """
    A recursive-descent parser over the tokens of one selector.
    """

    def __init__(self, text):
        self.text = text
        self.tokens = _tokenize(text)
        self.position = 0

    def peek(self):
        return self.tokens[self.position]

    def advance(self):
        token = self.tokens[self.position]
        self.position += 1
        return token

    def fail(self, message, token):
        raise SelectorError(message, self.text, token.column)

    def selector(self):
        if self.peek().kind == "end":
            return everything()
        requirements = [self.requirement()]
        while self.peek().kind == ",":
            self.advance()
            requirements.append(self.requirement())
        if self.peek().kind != "end":
            self.fail("expected ',' or the end of the selector", self.peek())
        return Selector(requirements)

    def requirement(self):
        if self.peek().kind == "!":
            self.advance()
            return Requirement(self.key(), DOES_NOT_EXIST, ())
        key = self.key()
        token = self.peek()
        if token.kind in (",", "end"):
            return Requirement(key, EXISTS, ())
        if token.kind in ("=", "==", "!="):
            self.advance()
            operator = NOT_EQUALS if token.kind == "!=" else EQUALS
            return Requirement(key, operator, (self.value(key, allowEmpty=True),))
        if token.kind == "name" and token.text in (IN, NOT_IN):
            self.advance()
            return Requirement(key, token.text, self.valueSet(key, token.text))
        self.fail("expected an operator (=, ==, !=, in, notin), ',' or the end of the selector",
                  token)

    def key(self):
        token = self.advance()
        if token.kind != "name":
            self.fail("expected a label key", token)
        problem = keyProblem(token.text)
        if problem:
            self.fail(problem, token)
        return token.text

    def value(self, key, allowEmpty=False):
        token = self.peek()
        if allowEmpty and token.kind in (",", "end"):
            return ""
        if token.kind != "name":
            self.fail("expected a value for %r" % (key,), token)
        problem = valueProblem(key, token.text)
        if problem:
            self.fail(problem, token)
        return self.advance().text

    def valueSet(self, key, operator):
        token = self.advance()
        if token.kind != "(":
            self.fail("expected '(' after %r" % (operator,), token)
        if self.peek().kind == ")":
            self.fail("empty value set: %r needs at least one value" % (operator,), self.peek())
        values = [self.value(key)]
        while self.peek().kind == ",":
            self.advance()
            values.append(self.value(key))
        token = self.advance()
        if token.kind == "end":
            self.fail("expected ')'", token)
        if token.kind != ")":
            self.fail("expected ',' or ')'", token)
        return values


def parseSelector(text):
    """
    Parse a label selector (see the module docstring for the grammar).

    @return: a L{Selector}
    @raise SelectorError: with the 1-based column of the problem.
    """
    return _Parser(text).selector()


# The label store

class CorruptLabels(CorruptRecord):
    """
    A label entry in the store is not a JSON object of text values.
    """


def decodeLabels(entry, backend=None):
    """
    @return: the label map stored in C{entry}, a L{store.common.Entry}.
    @raise CorruptLabels: if its value is not a JSON object of text values.
    """
    try:
        labels = loadObject(entry.key, entry.value)
    except CorruptRecord as e:
        labels, reason = None, e.reason
    else:
        reason = "found %s" % (", ".join(sorted({type(v).__name__ for v in labels.values()})),)
    if labels is None or not all(isinstance(v, str) for v in labels.values()):
        raise CorruptLabels(entry.key, "label entry is not a JSON object of text values (%s)"
                            % (reason,), backend)
    return labels


def encodeLabels(labels):
    """
    @return: the stored form of a label map: compact JSON with sorted keys.
    """
    return json.dumps(labels, sort_keys=True, separators=(",", ":")).encode("utf-8")


class LabelStore(object):
    """
    The labels of every object, kept in an L{IStore}.

    Writes read the entry, change it and write it back with a version check,
    retrying (up to C{retries} times) when another writer got there first.

    @param store: an L{IStore}.
    @param retries: how many read-modify-write attempts to make.
    """

    def __init__(self, store, retries=10):
        self.store = store
        self.retries = retries

    def getLabels(self, labelType, objectId):
        """
        @return: L{Deferred} firing with the object's label map (C{{}} when it
            has none); fails with L{CorruptLabels} for an unreadable entry,
            L{InvalidKey} for an unknown type or malformed id.
        """
        def got(entry):
            return {} if entry is None else decodeLabels(entry, self.store.backend)
        return defer.maybeDeferred(keys.label, labelType, objectId).addCallback(
            self.store.get).addCallback(got)

    def applyLabels(self, labelType, objectId, set=None, remove=()):
        """
        Set the labels C{set} (C{{key: value}}) and remove the keys C{remove}
        of one object, leaving its other labels alone.  When no label is left
        the entry is deleted.

        @return: L{Deferred} firing with the resulting label map; fails with
            L{SelectorError} for invalid labels (and writes nothing),
            L{CorruptLabels} if the stored entry is unreadable,
            L{VersionConflict} if other writers kept winning the race.
        """
        def changes():
            validateLabels(set or {})
            problems = [p for p in map(keyProblem, remove) if p]
            if problems:
                raise SelectorError("; ".join(problems))
            return LabelChanges(dict(set or {}), tuple(remove))
        return defer.maybeDeferred(changes).addCallback(
            lambda c: self._update(labelType, objectId, c.applyTo, decode=True))

    def setLabels(self, labelType, objectId, labels):
        """
        Replace the whole label map of one object (deleting the entry when
        C{labels} is empty).  This also overwrites an unreadable entry.

        @return: L{Deferred} firing with the new label map; fails like
            L{applyLabels}.
        """
        labels = dict(labels)
        return defer.maybeDeferred(validateLabels, labels).addCallback(
            lambda _: self._update(labelType, objectId, lambda old: labels, decode=False))

    def removeObject(self, labelType, objectId):
        """
        Remove every label of one object.

        @return: L{Deferred} firing with C{{}}; fails like L{setLabels}.
        """
        return self.setLabels(labelType, objectId, {})

    @defer.inlineCallbacks
    def _update(self, labelType, objectId, change, decode):
        """
        Read, C{change(old labels)} and write back with a version check,
        retrying on conflicts.  Without C{decode}, the stored entry is not
        read as labels and C{change} gets C{{}}.

        @return: L{Deferred} firing with the written label map.
        """
        key = keys.label(labelType, objectId)
        for _ in range(self.retries):
            entry = yield self.store.get(key)
            old = decodeLabels(entry, self.store.backend) if (entry and decode) else {}
            labels = change(old)
            try:
                yield self._write(key, entry, labels)
            except (VersionConflict, KeyExists):
                log.debug("label entry {key} changed under us; retrying", key=key)
                continue
            return labels
        raise VersionConflict(key, self.store.backend,
                              "gave up changing labels after %d attempts: other writers kept "
                              "changing them; try again" % (self.retries,))

    def _write(self, key, entry, labels):
        """
        Write C{labels} over C{entry} (the version read, or C{None}).

        @return: L{Deferred} firing when written.
        """
        value = encodeLabels(labels)
        if entry is None:
            return self.store.create(key, value) if labels else defer.succeed(None)
        if not labels:
            return self.store.delete(key, entry.version)
        if value == entry.value:
            return defer.succeed(None)
        return self.store.cas(key, value, entry.version)

    def listLabels(self, labelType):
        """
        Read the labels of every object of one type.  Unreadable entries are
        skipped with a logged warning.

        @return: L{Deferred} firing with C{{objectId: labels}}; fails with
            L{InvalidKey} for an unknown type.
        """
        return defer.maybeDeferred(keys.labelTree, labelType).addCallback(
            self.store.list).addCallback(self._decodeAll, labelType)

    def _decodeAll(self, entries, labelType):
        result = {}
        for key, entry in sorted(entries.items()):
            try:
                entryType, objectId = keys.labelId(key)
                if keys.label(entryType, objectId) != key or entryType != labelType:
                    raise InvalidKey(key, None, "not a %s label key" % (labelType,))
                result[objectId] = decodeLabels(entry, self.store.backend)
            except (InvalidKey, CorruptLabels) as e:
                log.warn("skipping label entry {key}: {problem}", key=key, problem=str(e))
        return result

    def select(self, labelType, selector):
        """
        Find the objects of one type whose labels match C{selector}.

        @param selector: a L{Selector}, or its text.
        @return: L{Deferred} firing with a sorted list of
            C{(objectId, labels)}; fails with L{SelectorError} for a
            malformed selector, L{InvalidKey} for an unknown type.
        """
        def parsed(selector):
            return self.listLabels(labelType).addCallback(
                lambda found: sorted((i, ls) for i, ls in found.items() if selector.matches(ls)))
        if isinstance(selector, str):
            return defer.maybeDeferred(parseSelector, selector).addCallback(parsed)
        return parsed(selector)
