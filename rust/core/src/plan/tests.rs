use super::*;

fn problem(message: &str, column: Option<&str>) -> RowProblem {
    RowProblem {
        message: message.to_owned(),
        column: column.map(str::to_owned),
    }
}

/// Rows read in order: `None` a valid row, `Some(problem)` an invalid one.
fn rows(kinds: &[Option<&str>]) -> Rows {
    let mut rows = Rows::new(true);
    for kind in kinds {
        match kind {
            None => rows.push_valid(),
            Some(message) => rows.push_invalid(problem(message, None)).unwrap(),
        }
    }
    rows
}

fn n(count: usize) -> Generations {
    Generations::new(count).unwrap()
}

/// Every row's answer index and sources, in order.
fn table<'a>(plan: &Plan<'a>) -> Vec<(usize, Option<usize>, Vec<Source<'a>>)> {
    plan.rows()
        .map(|row| (row.index, row.answer(), row.sources().collect()))
        .collect()
}

#[test]
fn every_generation_of_a_full_answer_takes_its_image_in_order() {
    let rows = rows(&[None, None]);
    let answers = [
        Answer::Images { start: 0, found: 2 },
        Answer::Images { start: 2, found: 2 },
    ];
    let plan = Plan::new(&rows, &answers, n(2)).unwrap();
    assert_eq!(
        table(&plan),
        vec![
            (0, Some(0), vec![Source::Image(0), Source::Image(1)]),
            (1, Some(1), vec![Source::Image(2), Source::Image(3)]),
        ]
    );
    assert_eq!(
        (plan.len(), plan.generations(), plan.is_empty()),
        (4, 2, false)
    );
}

#[test]
fn generations_past_the_images_found_fail_as_fewer_images() {
    let rows = rows(&[None]);
    let answers = [Answer::Images { start: 5, found: 1 }];
    let plan = Plan::new(&rows, &answers, n(3)).unwrap();
    let fewer = Failure::FewerImages { found: 1, asked: 3 };
    assert_eq!(
        table(&plan),
        vec![(
            0,
            Some(0),
            vec![
                Source::Image(5),
                Source::Failed(fewer),
                Source::Failed(fewer)
            ]
        )]
    );
    assert_eq!(
        fewer.to_string(),
        "the model returned 1 image(s) for 3 generation(s)"
    );
}

#[test]
fn an_answer_with_no_image_fails_every_generation_as_fewer_images() {
    let rows = rows(&[None]);
    let answers = [Answer::Images { start: 0, found: 0 }];
    let plan = Plan::new(&rows, &answers, n(2)).unwrap();
    let fewer = Source::Failed(Failure::FewerImages { found: 0, asked: 2 });
    assert_eq!(table(&plan), vec![(0, Some(0), vec![fewer, fewer])]);
}

#[test]
fn a_failed_answer_fails_every_generation_with_its_error() {
    let rows = rows(&[None, None]);
    let answers = [
        Answer::Images { start: 0, found: 1 },
        Answer::Failed {
            error: "the model raised RuntimeError: quota".to_owned(),
        },
    ];
    let plan = Plan::new(&rows, &answers, n(2)).unwrap();
    let failed = Failure::FailedAnswer {
        answer: 1,
        error: "the model raised RuntimeError: quota",
    };
    let [_, second]: [_; 2] = table(&plan).try_into().unwrap();
    assert_eq!(
        second,
        (
            1,
            Some(1),
            vec![Source::Failed(failed), Source::Failed(failed)]
        )
    );
    assert_eq!(failed.to_string(), "the model raised RuntimeError: quota");
}

#[test]
fn invalid_rows_fail_whole_and_take_no_answer() {
    let rows = rows(&[Some("row 0 is bad"), None, Some("row 2 is bad"), None]);
    let answers = [
        Answer::Images { start: 0, found: 1 },
        Answer::Images { start: 1, found: 1 },
    ];
    let plan = Plan::new(&rows, &answers, n(1)).unwrap();
    let invalid = |problem| vec![Source::Failed(Failure::InvalidRow { problem })];
    assert_eq!(
        table(&plan),
        vec![
            (0, None, invalid("row 0 is bad")),
            (1, Some(0), vec![Source::Image(0)]),
            (2, None, invalid("row 2 is bad")),
            (3, Some(1), vec![Source::Image(1)]),
        ]
    );
    assert_eq!(
        Failure::InvalidRow {
            problem: "row 0 is bad"
        }
        .to_string(),
        "row 0 is bad"
    );
}

#[test]
fn a_batch_of_invalid_rows_needs_no_answer() {
    let rows = rows(&[Some("bad"), Some("worse")]);
    let plan = Plan::new(&rows, &[], n(2)).unwrap();
    assert_eq!(plan.rows().count(), 2);
    assert!(plan
        .rows()
        .flat_map(PlannedRow::sources)
        .all(|source| matches!(source, Source::Failed(Failure::InvalidRow { .. }))));
}

#[test]
fn an_empty_batch_plans_nothing() {
    let rows = Rows::new(false);
    let plan = Plan::new(&rows, &[], n(3)).unwrap();
    assert!(plan.is_empty());
    assert_eq!((plan.len(), plan.rows().count()), (0, 0));
}

#[test]
fn fewer_or_more_answers_than_valid_rows_is_an_error() {
    let rows = rows(&[None, Some("bad"), None]);
    let one = [Answer::Images { start: 0, found: 1 }];
    let err = Plan::new(&rows, &one, n(1)).unwrap_err();
    assert_eq!(
        err,
        AnswerCount {
            answers: 1,
            valid_rows: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "fewer answers than rows: 1 answer(s) for 2 valid row(s)"
    );
    let three = [
        Answer::Images { start: 0, found: 1 },
        Answer::Images { start: 1, found: 1 },
        Answer::Images { start: 2, found: 1 },
    ];
    assert_eq!(
        Plan::new(&rows, &three, n(1)).unwrap_err().to_string(),
        "more answers than rows: 3 answer(s) for 2 valid row(s)"
    );
}

#[test]
fn generations_are_bounded() {
    assert_eq!(Generations::new(1).map(Generations::get), Ok(1));
    assert_eq!(
        Generations::new(MAX_GENERATIONS).map(Generations::get),
        Ok(MAX_GENERATIONS)
    );
    for count in [0, MAX_GENERATIONS + 1, usize::MAX] {
        let err = Generations::new(count).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("num_generations must be between 1 and 10000, got {count}")
        );
    }
}

#[test]
fn an_invalid_row_is_refused_unless_invalid_rows_pass() {
    let mut refusing = Rows::new(false);
    refusing.push_valid();
    let refused = refusing
        .push_invalid(problem("row 1 lacks 'prompt'", Some("prompt")))
        .unwrap_err();
    assert_eq!(
        refused,
        RefusedRow {
            index: 1,
            problem: problem("row 1 lacks 'prompt'", Some("prompt")),
        }
    );
    assert_eq!((refusing.len(), refusing.valid()), (1, 1));

    let mut passing = Rows::new(true);
    passing.push_valid();
    passing
        .push_invalid(problem("row 1 lacks 'prompt'", Some("prompt")))
        .unwrap();
    assert_eq!(passing.next_index(), 2);
    assert_eq!((passing.len(), passing.valid()), (2, 1));
    assert_eq!(
        passing.invalid(),
        &[InvalidRow {
            index: 1,
            problem: "row 1 lacks 'prompt'".to_owned()
        }]
    );
}

#[test]
fn a_batch_is_built_once() {
    let rows = rows(&[None]);
    assert_eq!(rows.start_build(), Ok(()));
    assert_eq!(rows.start_build(), Err(AlreadyBuilt));
    assert_eq!(
        AlreadyBuilt.to_string(),
        "a prepared batch can be built only once"
    );
}
