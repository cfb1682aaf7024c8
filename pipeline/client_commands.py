"""`recsys` commands a gRPC client runs against a server: predict, recommend, similar."""

from __future__ import annotations

from typing import List

from components import features as F
from pipeline.cli_common import CliError, credentials


def _client(args):
    from serving.client import RecsysClient

    client = RecsysClient(target=args.target, model_name=args.model_name, timeout=args.timeout, label=args.label,
                          credentials=credentials(args))
    if args.wait > 0:
        client.wait_until_ready(args.wait)
    return client


def cmd_predict(args) -> int:
    kind, (value,) = _client(args).predict_output([(args.user, args.item)])
    what = "predicted rating" if kind == F.RATING_OUTPUT else "ranking score (not a rating: a ranking model is served)"
    print(f"{what} of user {args.user} for item {args.item}: {value:.3f}")
    return 0


def _ids(text: str) -> List[str]:
    return [i.strip() for i in text.split(",") if i.strip()]


def _print_ranked(heading: str, ranked) -> None:
    print(heading)
    for rank, rec in enumerate(ranked, 1):
        print(f"{rank:>3}. {rec.item_id:<10} {rec.score:6.3f}  {rec.title}")


def _user_features(pairs: List[str]) -> dict:
    features = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--feature {pair!r}: expected NAME=VALUE")
        try:
            features[name] = float(value)
        except ValueError:
            features[name] = value
    return features


def cmd_recommend(args) -> int:
    if args.history is not None:
        if args.feature or args.include_rated:
            raise CliError("--history cannot be combined with --feature or --include-rated")
        history = _ids(args.history)
        answer = _client(args).recommend_by_history(history, k=args.k, user_id=args.user or "",
                                                    use_stored_history=bool(args.user),
                                                    exclude=_ids(args.exclude), allow=_ids(args.allow))
        who = f"user {args.user}" if args.user else "an anonymous session"
        _print_ranked(f"top {len(answer.items)} items for {who}, scored from {answer.history_length} known "
                      f"item{'s' if answer.history_length != 1 else ''}:", answer.items)
        if answer.unknown_items:
            print(f"{answer.unknown_items} unknown item id{'s' if answer.unknown_items != 1 else ''} ignored")
        if answer.popularity_fallback:
            print("no known history item: these are the most popular items")
        return 0
    if not args.user:
        raise CliError("recommend needs --user (or --history for an anonymous session)")
    if args.feature:
        if args.exclude or args.allow or args.include_rated:
            raise CliError("--feature cannot be combined with --exclude, --allow or --include-rated")
        recommendations = _client(args).recommend_by_features(args.user, _user_features(args.feature), k=args.k)
    else:
        recommendations = _client(args).recommend(args.user, k=args.k, exclude_rated=not args.include_rated,
                                                  exclude=_ids(args.exclude), allow=_ids(args.allow))
    _print_ranked(f"top {len(recommendations)} items for user {args.user}:", recommendations)
    return 0


def cmd_similar(args) -> int:
    similar = _client(args).similar_items(args.item, k=args.k)
    _print_ranked(f"{len(similar)} items like {args.item}:", similar)
    return 0

