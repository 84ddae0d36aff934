//! list_basic: push and pop at either end, length; an emptied list disappears.

use plugin_abi::ListEnd::{Left, Right};

use super::cases;

fn items(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

cases! {
    async fn push_right_pop_left_is_first_in_first_out(instance, keys) {
        let list = instance.list_basic().expect("declared list_basic");
        assert_eq!(list.push(&keys.key("q"), Right, items(&["a", "b"])).await.unwrap(), 2);
        assert_eq!(list.push(&keys.key("q"), Right, items(&["c"])).await.unwrap(), 3);
        assert_eq!(list.pop(&keys.key("q"), Left, 2).await.unwrap(), items(&["a", "b"]));
        assert_eq!(list.pop(&keys.key("q"), Left, 1).await.unwrap(), items(&["c"]));
    }

    async fn push_left_pop_left_is_last_in_first_out(instance, keys) {
        let list = instance.list_basic().unwrap();
        list.push(&keys.key("s"), Left, items(&["a", "b", "c"])).await.unwrap();
        assert_eq!(list.pop(&keys.key("s"), Left, 3).await.unwrap(), items(&["c", "b", "a"]));
    }

    async fn pop_right_takes_from_the_tail(instance, keys) {
        let list = instance.list_basic().unwrap();
        list.push(&keys.key("l"), Right, items(&["a", "b", "c"])).await.unwrap();
        assert_eq!(list.pop(&keys.key("l"), Right, 2).await.unwrap(), items(&["c", "b"]));
        assert_eq!(list.length(&keys.key("l")).await.unwrap(), 1);
    }

    async fn popping_more_than_the_length_returns_what_there_is(instance, keys) {
        let list = instance.list_basic().unwrap();
        list.push(&keys.key("l"), Right, items(&["only"])).await.unwrap();
        assert_eq!(list.pop(&keys.key("l"), Left, 10).await.unwrap(), items(&["only"]));
        assert!(list.pop(&keys.key("l"), Left, 1).await.unwrap().is_empty());
    }

    async fn an_absent_list_is_empty(instance, keys) {
        let list = instance.list_basic().unwrap();
        assert_eq!(list.length(&keys.key("none")).await.unwrap(), 0);
        assert!(list.pop(&keys.key("none"), Right, 1).await.unwrap().is_empty());
    }

    async fn an_emptied_list_has_length_zero_and_can_be_reused(instance, keys) {
        let list = instance.list_basic().unwrap();
        list.push(&keys.key("l"), Right, items(&["a"])).await.unwrap();
        list.pop(&keys.key("l"), Left, 1).await.unwrap();
        assert_eq!(list.length(&keys.key("l")).await.unwrap(), 0);
        assert_eq!(list.push(&keys.key("l"), Left, items(&["b"])).await.unwrap(), 1);
    }

    async fn binary_and_empty_values_survive(instance, keys) {
        let list = instance.list_basic().unwrap();
        let values = vec![vec![0u8, 255, 10, 13], Vec::new()];
        list.push(&keys.key("l"), Right, values.clone()).await.unwrap();
        assert_eq!(list.pop(&keys.key("l"), Left, 2).await.unwrap(), values);
    }
}
